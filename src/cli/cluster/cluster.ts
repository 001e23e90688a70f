/**
 * A whole Floodgate deployment on one machine: etcd, two PostgreSQL nodes under Patroni (one
 * primary, one synchronous standby), HAProxy (database primary and replica ports chosen by
 * Patroni's REST checks; the API nodes behind /readyz), Redis, the provider simulator, N API
 * nodes and M workers. Every port is chosen free at start (ephemeral range, so never a
 * service's standard port), everything lives in one directory, and `down` is destructive: it
 * SIGKILLs whatever mentions that directory, orphan postmasters included.
 *
 * `floodgate cluster up|status|down` drives it, and the fault tests (test/faults/) use it.
 * This is the handle and the start order; the configuration files are made in configs.ts, the
 * daemons started and killed in daemons.ts, the state recorded in state.ts, and the health read
 * in health.ts.
 */
import { chmod, mkdir, mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import {
  postgresPids,
  runFloodgate,
  startEtcd,
  startFloodgate,
  startHaproxy,
  startPatroni,
  startRedis,
  teardown,
  waitEtcdHealthy,
  writePatroniConfig,
} from './daemons.js';
import {
  type ClusterStatus,
  clusterStatus,
  haproxyServers,
  type MemberStatus,
  patroniMembers,
  running,
  waitDatabaseHealthy,
} from './health.js';
import { signal, signalGroup, waitFor } from './processes.js';
import { type ClusterState, clusterUrls, newState, PG_NODE_NAMES, readState, writeState } from './state.js';

// Measured here: the whole cluster is up in about 10 s on an idle machine; a loaded one
// (eight engineers on two cores) can take several times that.
const UP_TIMEOUT_MS = 90_000;

export interface ClusterOptions {
  /** Default: a new directory under the system's temporary directory. */
  dir?: string;
  apiNodes: number;
  workers: number;
  /** Extra environment for the API nodes and workers. */
  env?: Record<string, string>;
  log?: (message: string) => void;
}

export type { ClusterState, ClusterStatus, MemberStatus };

export class LocalCluster {
  private constructor(
    readonly state: ClusterState,
    private readonly log: (message: string) => void,
  ) {}

  get dir() {
    return this.state.dir;
  }
  get databaseUrl() {
    return clusterUrls(this.state).database;
  }
  get replicaUrl() {
    return clusterUrls(this.state).replica;
  }
  get redisUrl() {
    return clusterUrls(this.state).redis;
  }
  get apiUrl() {
    return clusterUrls(this.state).api;
  }
  apiNodeUrl(index: number) {
    return `http://127.0.0.1:${this.state.ports.api[index]}`;
  }
  /** Environment for a `floodgate` command against this cluster (migrate, audit, merchants). */
  get commandEnv(): Record<string, string> {
    return { DATABASE_URL: this.databaseUrl, FLOODGATE_LOG_LEVEL: 'warn' };
  }

  static async up(options: ClusterOptions): Promise<LocalCluster> {
    const log = options.log ?? (() => {});
    const dir = options.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'floodgate-cluster-')));
    await mkdir(dir, { recursive: true });
    // Patroni runs as postgres when we are root: it must be able to reach its directories.
    await chmod(dir, 0o755);
    const cluster = new LocalCluster(await newState({ dir, apiNodes: options.apiNodes, workers: options.workers, env: options.env }), log);
    try {
      await cluster.startAll();
    } catch (error) {
      log(`cluster failed to start; logs are in ${dir}`);
      await cluster.down({ keepDir: true });
      throw error;
    }
    return cluster;
  }

  static async load(dir: string, log?: (message: string) => void): Promise<LocalCluster> {
    return new LocalCluster(await readState(dir), log ?? (() => {}));
  }

  private async save() {
    await writeState(this.state);
  }

  private async startAll() {
    const started = Date.now();
    const since = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
    this.state.pids.etcd = startEtcd(this.state);
    await this.save();
    await waitEtcdHealthy(this.state, UP_TIMEOUT_MS);
    this.log(`etcd up (${since()})`);
    for (const node of this.state.ports.nodes) await writePatroniConfig(this.state, node);
    this.state.pids.haproxy = await startHaproxy(this.state);
    await this.save();
    const [first, second] = PG_NODE_NAMES as [string, string];
    await this.startPatroni(first);
    await waitFor(
      'first PostgreSQL node primary',
      UP_TIMEOUT_MS,
      async () => ((await this.members()).some((m) => m.role === 'leader' && m.state === 'running') ? true : undefined),
      300,
    );
    this.log(`${first} primary (${since()})`);
    await this.startPatroni(second);
    await this.startRedis();
    await this.waitDatabaseHealthy(UP_TIMEOUT_MS);
    this.log(`${second} synchronous standby, HAProxy routing (${since()})`);
    await this.createDatabase();
    await this.runFloodgate(['migrate']);
    await this.startSimulator();
    for (let i = 0; i < this.state.ports.api.length; i++) await this.startApi(i);
    for (let i = 0; i < this.state.workers; i++) await this.startWorker(i);
    await this.save();
    for (let i = 0; i < this.state.ports.api.length; i++) await this.waitApiUp(i, UP_TIMEOUT_MS);
    this.log(`API nodes and workers up (${since()})`);
  }

  /** Starts (or restarts) one node's Patroni; a node that was primary rejoins with pg_rewind. */
  async startPatroni(name: string) {
    this.state.pids.patroni[name] = await startPatroni(this.state, name);
    await this.save();
  }

  async startRedis() {
    this.state.pids.redis = await startRedis(this.state);
    await this.save();
  }

  /** SIGKILLs Redis (a crash): what the degradation tests need. */
  killRedis() {
    if (this.state.pids.redis) signalGroup(this.state.pids.redis, 'SIGKILL');
  }

  private async createDatabase() {
    const client = new pg.Client({
      connectionString: `postgres://postgres@127.0.0.1:${this.state.ports.pgPrimary}/postgres`,
      connectionTimeoutMillis: 5_000,
    });
    await client.connect();
    try {
      const exists = await client.query("select 1 from pg_database where datname = 'floodgate'");
      if (exists.rowCount === 0) await client.query('create database floodgate');
    } finally {
      await client.end();
    }
  }

  /** Runs a one-shot `floodgate` command against the cluster; resolves with its exit code and output. */
  runFloodgate(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return runFloodgate(args, this.commandEnv);
  }

  private async startSimulator() {
    this.state.pids.simulator = startFloodgate(this.state, 'simulator', 'simulator', {
      FLOODGATE_SIMULATOR_PORT: String(this.state.ports.simulator),
      FLOODGATE_SIMULATOR_WEBHOOK_URL: `${this.apiUrl}/v1/providers/simulator/webhooks`,
    });
    await this.save();
  }

  /** Starts (or restarts) API node `index` on its port. */
  async startApi(index: number) {
    this.state.pids.api[index] = startFloodgate(this.state, `api${index + 1}`, 'api', {
      FLOODGATE_PORT: String(this.state.ports.api[index]),
    });
    await this.save();
  }

  async startWorker(index: number) {
    this.state.pids.workers[index] = startFloodgate(this.state, `worker${index + 1}`, 'worker', {});
    await this.save();
  }

  /** Sends sig to API node `index` (SIGKILL: a crash; SIGTERM: a drain). */
  signalApi(index: number, sig: NodeJS.Signals) {
    const pid = this.state.pids.api[index];
    if (pid) signal(pid, sig);
  }

  apiRunning(index: number) {
    return running(this.state.pids.api[index]);
  }

  /** Waits until HAProxy sends traffic to API node `index`. */
  async waitApiUp(index: number, timeoutMs = UP_TIMEOUT_MS) {
    await waitFor(
      `api${index + 1} up behind HAProxy`,
      timeoutMs,
      async () => ((await this.haproxyServers()).api?.[`api${index + 1}`] === 'UP' ? true : undefined),
      250,
    );
  }

  /** Patroni's view of the members, from any node's REST API that answers. */
  members(): Promise<MemberStatus[]> {
    return patroniMembers(this.state.ports);
  }

  async primaryName(): Promise<string | undefined> {
    return (await this.members()).find((member) => member.role === 'leader' && member.state === 'running')?.name;
  }

  /** HAProxy's view: section → server → status, from its stats page. */
  haproxyServers(): Promise<Record<string, Record<string, string>>> {
    return haproxyServers(this.state.ports);
  }

  /** Waits until the database side is whole again (see health.ts). */
  waitDatabaseHealthy(timeoutMs = UP_TIMEOUT_MS): Promise<void> {
    return waitDatabaseHealthy(this.state.ports, timeoutMs);
  }

  /** The pids of a PostgreSQL node's postmaster and its children (backends, walsender...). */
  postgresPids(name: string): number[] {
    return postgresPids(this.state, name);
  }

  /** A node crash: SIGKILL its Patroni and its PostgreSQL (postmaster and every backend). */
  crashPgNode(name: string) {
    const postgres = this.postgresPids(name);
    const patroni = this.state.pids.patroni[name];
    if (patroni) signalGroup(patroni, 'SIGKILL');
    for (const pid of postgres) signal(pid, 'SIGKILL');
  }

  /** Freezes (SIGSTOP) or thaws (SIGCONT) a node's PostgreSQL processes: a stalled disk or VM. */
  freezePostgres(name: string, sig: 'SIGSTOP' | 'SIGCONT', pids = this.postgresPids(name)) {
    for (const pid of pids) signal(pid, sig);
    return pids;
  }

  status(): Promise<ClusterStatus> {
    return clusterStatus(this.state);
  }

  /** Destructive teardown: SIGKILL every process of the cluster, orphans too; remove the directory unless keepDir. */
  down(options: { keepDir?: boolean } = {}): Promise<void> {
    return teardown(this.dir, options);
  }
}
