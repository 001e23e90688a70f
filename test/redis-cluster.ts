/**
 * A real Redis Cluster for tests: `redis-server --cluster-enabled yes` on free ports (and their
 * bus ports, +10000) in a temporary directory, joined with `redis-cli --cluster create`.
 * Started and stopped by the test file that calls startRedisCluster (top-level await).
 *
 *   const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });   // ~2-3 s
 *   cluster.url                          redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...
 *   await cluster.masterOf(key)          the node serving the key's slot
 *   cluster.kill(node)                   SIGKILL
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { engineSkip, freePort } from './engines.js';

const run = promisify(execFile);
const REDIS_SERVER = '/usr/bin/redis-server';
const REDIS_CLI = '/usr/bin/redis-cli';
// The cluster bus listens on the client port + 10000.
const BUS_PORT_OFFSET = 10_000;
// A master silent this long is failed; its replica is promoted about a second later. Short, so
// a failover test takes seconds, long enough not to fail a node that is only slow under load.
const NODE_TIMEOUT_MS = 2_000;
const READY_TIMEOUT_MS = 30_000;

/** For node:test's `skip`: why a cluster cannot start here (throws under CI=true). */
export function redisClusterSkip(): string | false {
  return engineSkip('redis-server (Redis Cluster)', [REDIS_SERVER, REDIS_CLI]);
}

export interface ClusterNode {
  port: number;
  process: ChildProcess;
  /** Set by kill(): the exit event comes a moment later. */
  killed: boolean;
}

export interface TestRedisCluster {
  url: string;
  nodes: ClusterNode[];
  /** The master that serves `key`'s hash slot now. */
  masterOf(key: string): Promise<ClusterNode>;
  kill(node: ClusterNode): void;
  /** Waits until every slot is served again and every live node says the cluster is ok. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedisCluster(options: { masters?: number; replicasPerMaster?: number } = {}): Promise<TestRedisCluster> {
  const masters = options.masters ?? 3;
  const replicas = options.replicasPerMaster ?? 0;
  const dir = mkdtempSync(path.join(tmpdir(), 'floodgate-redis-cluster-'));
  const nodes: ClusterNode[] = [];
  let stopped = false;

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    for (const node of nodes) if (node.process.exitCode === null) node.process.kill('SIGKILL');
    await Promise.all(
      nodes.map((node) =>
        node.process.exitCode !== null || node.process.signalCode
          ? undefined
          : new Promise((resolve) => node.process.once('exit', resolve)),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      const port = await freePort({ alsoPlus: BUS_PORT_OFFSET });
      const args = [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        path.join(dir, `nodes-${port}.conf`),
        '--cluster-node-timeout',
        String(NODE_TIMEOUT_MS),
        // Slots of a dead master are refused; the others keep serving (see shared/notes/ha-facts.md).
        '--cluster-require-full-coverage',
        'no',
        '--repl-diskless-sync',
        'yes',
        '--repl-diskless-sync-delay',
        '0',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
        '--logfile',
        path.join(dir, `redis-${port}.log`),
      ];
      nodes.push({ port, process: spawn(REDIS_SERVER, args, { stdio: 'ignore' }), killed: false });
    }
    for (const node of nodes) await waitPing(node.port);
    await run(REDIS_CLI, [
      '--cluster',
      'create',
      ...nodes.map((node) => `127.0.0.1:${node.port}`),
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ]);
    const cluster: TestRedisCluster = {
      url: `redis+cluster://${nodes.map((node) => `127.0.0.1:${node.port}`).join(',')}`,
      nodes,
      async masterOf(key) {
        const live = nodes.find((node) => !node.killed) as ClusterNode;
        const port = await withNode(live.port, async (redis) => {
          const slot = Number(await redis.call('CLUSTER', 'KEYSLOT', key));
          const ranges = (await redis.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, string]]>;
          const range = ranges.find(([from, to]) => slot >= from && slot <= to);
          if (!range) throw new Error(`no node serves slot ${slot}`);
          return range[2][1];
        });
        const node = nodes.find((candidate) => candidate.port === port);
        if (!node) throw new Error(`slot of ${key} is on unknown port ${port}`);
        return node;
      },
      kill(node) {
        node.killed = true;
        node.process.kill('SIGKILL');
      },
      waitHealthy: (timeoutMs = READY_TIMEOUT_MS) => waitHealthy(nodes, timeoutMs),
      stop,
    };
    await cluster.waitHealthy();
    return cluster;
  } catch (error) {
    await stop();
    throw error;
  }
}

async function withNode<T>(port: number, fn: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  redis.on('error', () => {});
  try {
    await redis.connect();
    return await fn(redis);
  } finally {
    redis.disconnect();
  }
}

async function waitPing(port: number): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    try {
      if ((await withNode(port, (redis) => redis.ping())) === 'PONG') return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not start`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Every live node reports cluster_state:ok and all 16384 slots served by live masters. */
async function waitHealthy(nodes: ClusterNode[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const live = nodes.filter((node) => !node.killed);
    const states = await Promise.all(
      live.map((node) =>
        withNode(node.port, async (redis) => {
          const info = String(await redis.call('CLUSTER', 'INFO'));
          const ranges = (await redis.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number, string]]>;
          const livePorts = new Set(live.map((candidate) => candidate.port));
          const served = ranges.filter(([, , master]) => livePorts.has(master[1])).reduce((sum, [from, to]) => sum + to - from + 1, 0);
          return info.includes('cluster_state:ok') && served === 16_384;
        }).catch(() => false),
      ),
    );
    if (states.length > 0 && states.every(Boolean)) return;
    if (Date.now() > deadline) throw new Error(`Redis Cluster not healthy within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
