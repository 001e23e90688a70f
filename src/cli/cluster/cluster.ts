/**
 * A whole Floodgate deployment on one machine: etcd, two PostgreSQL nodes under Patroni (one
 * primary, one synchronous standby), HAProxy (database primary and replica ports chosen by
 * Patroni's REST checks; the API nodes behind /readyz), Redis, the provider simulator, N API
 * nodes and M workers. Every port is chosen free at start (ephemeral range, so never a
 * service's standard port), everything lives in one directory, and `down` is destructive: it
 * SIGKILLs whatever mentions that directory, orphan postmasters included.
 *
 * `floodgate cluster up|status|down` drives it, and the fault tests (test/faults/) use it.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { type ClusterPorts, etcdArgs, haproxy503, haproxyConfig, type PgNodePorts, patroniConfig } from './configs.js';
import { findMarked, freePort, isRunning, postmasterPid, signal, signalGroup, sleep, startDaemon, waitFor } from './processes.js';

const ROOT = path.resolve(import.meta.dirname, '../../..');
const STATE_FILE = 'cluster.json';
const PG_NODE_NAMES = ['pg1', 'pg2'];
// The bound on a replica's lag behind the primary for HAProxy's replica port.
const MAX_REPLICA_LAG_BYTES = 1_048_576;
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

export interface ClusterState {
  dir: string;
  scope: string;
  ports: ClusterPorts;
  pids: {
    etcd?: number;
    patroni: Record<string, number>;
    haproxy?: number;
    redis?: number;
    simulator?: number;
    api: number[];
    workers: number[];
  };
  workers: number;
  env: Record<string, string>;
  /**
   * The FLOODGATE_* settings in the environment of the process that ran `up`. Its nodes saw them
   * (beneath the cluster's own wiring); a node restarted later, by another process, gets them too.
   */
  inheritedEnv?: Record<string, string>;
  secrets: { admission: string; providerWebhook: string; sealing: string };
  binDir: string;
}

export interface MemberStatus {
  name: string;
  role: string;
  state: string;
  lag?: number | string;
  timeline?: number;
}

export interface ClusterStatus {
  etcd: boolean;
  members: MemberStatus[];
  /** Servers by HAProxy section: 'UP', 'DOWN', ... */
  haproxy: Record<string, Record<string, string>>;
  redis: boolean;
  simulator: boolean;
  api: { port: number; running: boolean; ready: boolean }[];
  workers: boolean[];
}

export class LocalCluster {
  private constructor(
    readonly state: ClusterState,
    private readonly log: (message: string) => void,
  ) {}

  get dir() {
    return this.state.dir;
  }
  get databaseUrl() {
    return `postgres://postgres@127.0.0.1:${this.state.ports.pgPrimary}/floodgate`;
  }
  get replicaUrl() {
    return `postgres://postgres@127.0.0.1:${this.state.ports.pgReplica}/floodgate`;
  }
  get redisUrl() {
    return `redis://127.0.0.1:${this.state.ports.redis}`;
  }
  get apiUrl() {
    return `http://127.0.0.1:${this.state.ports.apiBalancer}`;
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
    const ports = await choosePorts(options.apiNodes);
    const cluster = new LocalCluster(
      {
        dir,
        scope: `floodgate-${path.basename(dir).replace(/[^a-zA-Z0-9-]/g, '')}`,
        ports,
        pids: { patroni: {}, api: [], workers: [] },
        workers: options.workers,
        env: options.env ?? {},
        inheritedEnv: floodgateSettings(process.env),
        secrets: {
          admission: randomBytes(32).toString('base64url'),
          providerWebhook: randomBytes(32).toString('base64url'),
          // Seals webhook signing secrets at rest; every node of the cluster opens them.
          sealing: randomBytes(32).toString('base64'),
        },
        binDir: postgresBinDir(),
      },
      log,
    );
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
    const state = JSON.parse(await readFile(path.join(dir, STATE_FILE), 'utf8')) as ClusterState;
    return new LocalCluster(state, log ?? (() => {}));
  }

  private async save() {
    await writeFile(path.join(this.dir, STATE_FILE), `${JSON.stringify(this.state, null, 2)}\n`);
  }

  private async startAll() {
    const started = Date.now();
    const since = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
    await this.startEtcd();
    this.log(`etcd up (${since()})`);
    for (const node of this.state.ports.nodes) await this.writePatroniConfig(node);
    await this.startHaproxy();
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

  private logFile(name: string) {
    return path.join(this.dir, `${name}.log`);
  }

  private async startEtcd() {
    this.state.pids.etcd = startDaemon({
      name: 'etcd',
      command: 'etcd',
      args: etcdArgs(this.state.ports, this.dir),
      logFile: this.logFile('etcd'),
    });
    await this.save();
    await waitFor('etcd healthy', UP_TIMEOUT_MS, async () => {
      const response = await fetch(`http://127.0.0.1:${this.state.ports.etcdClient}/health`, { signal: AbortSignal.timeout(1_000) });
      return response.ok ? true : undefined;
    });
  }

  private async writePatroniConfig(node: PgNodePorts) {
    const nodeDir = path.join(this.dir, node.name);
    await mkdir(nodeDir, { recursive: true, mode: 0o700 });
    const config = patroniConfig({
      scope: this.state.scope,
      node,
      dir: this.dir,
      etcdClient: this.state.ports.etcdClient,
      binDir: this.state.binDir,
    });
    await writeFile(path.join(nodeDir, 'patroni.yml'), JSON.stringify(config, null, 2));
    if (process.getuid?.() === 0) {
      const { uid, gid } = postgresUser();
      await chown(nodeDir, uid, gid);
      await chown(path.join(nodeDir, 'patroni.yml'), uid, gid);
    }
  }

  /** Starts (or restarts) one node's Patroni; a node that was primary rejoins with pg_rewind. */
  async startPatroni(name: string) {
    const logFile = this.logFile(name);
    await writeFile(logFile, '', { flag: 'a' });
    if (process.getuid?.() === 0) {
      const { uid, gid } = postgresUser();
      await chown(logFile, uid, gid);
    }
    this.state.pids.patroni[name] = startDaemon({
      name,
      command: '/usr/bin/patroni',
      args: [path.join(this.dir, name, 'patroni.yml')],
      logFile,
      runAs: 'postgres',
      cwd: path.join(this.dir, name),
    });
    await this.save();
  }

  private async startHaproxy() {
    const file = path.join(this.dir, 'haproxy.cfg');
    const errorFile503 = path.join(this.dir, 'haproxy-503.http');
    await writeFile(errorFile503, haproxy503());
    await writeFile(file, haproxyConfig(this.state.ports, { maxReplicaLagBytes: MAX_REPLICA_LAG_BYTES, errorFile503 }));
    this.state.pids.haproxy = startDaemon({
      name: 'haproxy',
      command: 'haproxy',
      args: ['-db', '-f', file],
      logFile: this.logFile('haproxy'),
    });
    await this.save();
  }

  async startRedis() {
    const redisDir = path.join(this.dir, 'redis');
    await mkdir(redisDir, { recursive: true });
    this.state.pids.redis = startDaemon({
      name: 'redis',
      command: 'redis-server',
      // Redis rewrites its process title (and with it the command line that names this
      // directory) unless told not to; `down` finds the cluster's processes by that name.
      args: [
        '--port',
        String(this.state.ports.redis),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        redisDir,
        '--set-proc-title',
        'no',
      ],
      logFile: this.logFile('redis'),
    });
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
  async runFloodgate(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), ...args],
        { cwd: ROOT, env: { ...process.env, ...this.commandEnv }, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 },
        (error, stdout, stderr) => {
          const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
          if (code !== 0 && args[0] === 'migrate') reject(new Error(`floodgate migrate failed: ${stderr}`));
          else resolve({ code, stdout, stderr });
        },
      );
    });
  }

  private nodeEnv(extra: Record<string, string>): Record<string, string> {
    return {
      ...this.state.inheritedEnv,
      FLOODGATE_LOG_LEVEL: 'warn',
      // Marks the process as this cluster's, for a teardown that trusts no recorded pid.
      FLOODGATE_CLUSTER_DIR: this.dir,
      DATABASE_URL: this.databaseUrl,
      REDIS_URL: this.redisUrl,
      FLOODGATE_REDIS_KEY_PREFIX: `${this.state.scope}:`,
      FLOODGATE_PROVIDER_URL: `http://127.0.0.1:${this.state.ports.simulator}`,
      FLOODGATE_PROVIDER_WEBHOOK_SECRET: this.state.secrets.providerWebhook,
      FLOODGATE_ADMISSION_SECRET: this.state.secrets.admission,
      FLOODGATE_SECRETS_KEYS: this.state.secrets.sealing,
      ...this.state.env,
      ...extra,
    };
  }

  private floodgateDaemon(name: string, role: string, env: Record<string, string>) {
    return startDaemon({
      name,
      command: process.execPath,
      args: ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), role],
      cwd: ROOT,
      env: this.nodeEnv(env),
      logFile: this.logFile(name),
    });
  }

  private async startSimulator() {
    this.state.pids.simulator = this.floodgateDaemon('simulator', 'simulator', {
      FLOODGATE_SIMULATOR_PORT: String(this.state.ports.simulator),
      FLOODGATE_SIMULATOR_WEBHOOK_URL: `${this.apiUrl}/v1/providers/simulator/webhooks`,
    });
    await this.save();
  }

  /** Starts (or restarts) API node `index` on its port. */
  async startApi(index: number) {
    this.state.pids.api[index] = this.floodgateDaemon(`api${index + 1}`, 'api', { FLOODGATE_PORT: String(this.state.ports.api[index]) });
    await this.save();
  }

  async startWorker(index: number) {
    this.state.pids.workers[index] = this.floodgateDaemon(`worker${index + 1}`, 'worker', {});
    await this.save();
  }

  /** Sends sig to API node `index` (SIGKILL: a crash; SIGTERM: a drain). */
  signalApi(index: number, sig: NodeJS.Signals) {
    const pid = this.state.pids.api[index];
    if (pid) signal(pid, sig);
  }

  apiRunning(index: number) {
    const pid = this.state.pids.api[index];
    return pid !== undefined && isRunning(pid);
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
  async members(): Promise<MemberStatus[]> {
    for (const node of this.state.ports.nodes) {
      try {
        const response = await fetch(`http://127.0.0.1:${node.restPort}/cluster`, { signal: AbortSignal.timeout(1_000) });
        if (!response.ok) continue;
        const body = (await response.json()) as { members?: MemberStatus[] };
        return body.members ?? [];
      } catch {
        // Try the next node.
      }
    }
    return [];
  }

  async primaryName(): Promise<string | undefined> {
    return (await this.members()).find((member) => member.role === 'leader' && member.state === 'running')?.name;
  }

  /** HAProxy's view: section → server → status, from its stats page. */
  async haproxyServers(): Promise<Record<string, Record<string, string>>> {
    const response = await fetch(`http://127.0.0.1:${this.state.ports.haproxyStats}/stats;csv`, { signal: AbortSignal.timeout(1_000) });
    const result: Record<string, Record<string, string>> = {};
    for (const line of (await response.text()).split('\n')) {
      const fields = line.split(',');
      const [section, server] = fields;
      if (!section || !server || section.startsWith('#') || server === 'FRONTEND' || server === 'BACKEND') continue;
      result[section] = { ...result[section], [server]: fields[17]?.split(' ')[0] ?? '' };
    }
    return result;
  }

  /**
   * Waits until the database side is whole again: a running leader, a synchronous standby
   * streaming with no lag, and HAProxy showing exactly one server up behind the primary port
   * (HAProxy counts every server up before its first check, so "some server up" proves nothing).
   */
  async waitDatabaseHealthy(timeoutMs = UP_TIMEOUT_MS) {
    await waitFor(
      'PostgreSQL leader, synchronous standby and HAProxy routing',
      timeoutMs,
      async () => {
        const members = await this.members();
        const leader = members.find((m) => m.role === 'leader' && m.state === 'running');
        const standby = members.find((m) => m.role === 'sync_standby' && (m.state === 'running' || m.state === 'streaming'));
        if (!leader || !standby || !(standby.lag === 0 || standby.lag === '0')) return undefined;
        const servers = await this.haproxyServers();
        const upPrimary = Object.entries(servers.pg_primary ?? {}).filter(([, status]) => status === 'UP');
        const upReplica = Object.entries(servers.pg_replica ?? {}).filter(([, status]) => status === 'UP');
        return upPrimary.length === 1 && upPrimary[0]?.[0] === leader.name && upReplica.length === 1 && upReplica[0]?.[0] === standby.name
          ? true
          : undefined;
      },
      300,
    );
  }

  /** The pids of a PostgreSQL node's postmaster and its children (backends, walsender...). */
  postgresPids(name: string): number[] {
    const pid = postmasterPid(path.join(this.dir, name, 'data'));
    if (!pid) return [];
    return readdirSync('/proc')
      .filter((entry) => /^\d+$/.test(entry))
      .map(Number)
      .filter((candidate) => candidate === pid || parentOf(candidate) === pid);
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

  async status(): Promise<ClusterStatus> {
    const ping = async (url: string) => {
      try {
        return (await fetch(url, { signal: AbortSignal.timeout(1_000) })).ok;
      } catch {
        return false;
      }
    };
    const pids = this.state.pids;
    return {
      etcd: await ping(`http://127.0.0.1:${this.state.ports.etcdClient}/health`),
      members: await this.members(),
      haproxy: await this.haproxyServers().catch(() => ({})),
      redis: pids.redis !== undefined && isRunning(pids.redis),
      simulator: pids.simulator !== undefined && isRunning(pids.simulator),
      api: await Promise.all(
        this.state.ports.api.map(async (port, index) => ({
          port,
          running: this.apiRunning(index),
          ready: await ping(`http://127.0.0.1:${port}/readyz`),
        })),
      ),
      workers: pids.workers.map((pid) => isRunning(pid)),
    };
  }

  /**
   * Destructive teardown: SIGKILL every daemon and whatever mentions the cluster's directory
   * (orphan postmasters too), then remove the directory. A graceful Patroni stop takes seconds
   * per node; nothing here needs to survive.
   */
  async down(options: { keepDir?: boolean } = {}) {
    const victims = findMarked(this.dir);
    // A frozen process (SIGSTOP) dies of SIGKILL too, but continuing it first lets it be reaped.
    for (const pid of victims) signal(pid, 'SIGCONT');
    for (const pid of victims) signal(pid, 'SIGKILL');
    // Processes die at once but are reaped late; wait until none is left running.
    await waitFor('cluster processes gone', 10_000, async () => (victims.every((pid) => !isRunning(pid)) ? true : undefined), 100).catch(
      () => {},
    );
    if (!options.keepDir && existsSync(this.dir)) await rm(this.dir, { recursive: true, force: true });
  }
}

function floodgateSettings(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).filter((entry): entry is [string, string] => entry[0].startsWith('FLOODGATE_') && entry[1] !== undefined),
  );
}

async function choosePorts(apiNodes: number): Promise<ClusterPorts> {
  const taken = new Set<number>();
  const next = async () => {
    for (;;) {
      const port = await freePort();
      if (!taken.has(port)) {
        taken.add(port);
        return port;
      }
    }
  };
  const nodes: PgNodePorts[] = [];
  for (const name of PG_NODE_NAMES) nodes.push({ name, pgPort: await next(), restPort: await next() });
  const api: number[] = [];
  for (let i = 0; i < apiNodes; i++) api.push(await next());
  return {
    etcdClient: await next(),
    etcdPeer: await next(),
    nodes,
    pgPrimary: await next(),
    pgReplica: await next(),
    haproxyStats: await next(),
    redis: await next(),
    simulator: await next(),
    api,
    apiBalancer: await next(),
  };
}

/** Debian keeps PostgreSQL's programs under /usr/lib/postgresql/<version>/bin; the newest wins. */
function postgresBinDir(): string {
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((entry) => existsSync(path.join(base, entry, 'bin', 'pg_ctl')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions[0]) return path.join(base, versions[0], 'bin');
  throw new Error('PostgreSQL server programs not found under /usr/lib/postgresql (apt-get install postgresql)');
}

function postgresUser(): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

export { sleep };
