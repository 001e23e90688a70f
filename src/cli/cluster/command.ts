/**
 * `floodgate cluster up|status|down`: the local HA cluster from the command line. `up` leaves
 * its daemons running and records them in <dir>/cluster.json; `status` and `down` read it.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalCluster } from './cluster.js';
import type { ClusterStatus } from './health.js';

export interface ClusterCommandOptions {
  dir?: string;
  api?: string;
  workers?: string;
  /** status: print the status as JSON (for scripts and tests) instead of the table. */
  json?: boolean;
}

const DEFAULT_DIR = path.join(os.tmpdir(), 'floodgate-cluster');
const NODES_MAX = 16;

export const CLUSTER_USAGE = 'usage: floodgate cluster up|status|down [--dir DIR] [--api N] [--workers M] [--json (status)]';

export async function clusterCommand(args: string[], options: ClusterCommandOptions): Promise<number> {
  const dir = path.resolve(options.dir ?? DEFAULT_DIR);
  const stateFile = path.join(dir, 'cluster.json');
  switch (args[0]) {
    case 'up': {
      const apiNodes = count(options.api, 2, 'api');
      const workers = count(options.workers, 1, 'workers');
      if (apiNodes === undefined || workers === undefined) return 2;
      if (existsSync(stateFile)) {
        console.error(`floodgate: a cluster is already recorded in ${dir}; run \`floodgate cluster down --dir ${dir}\` first`);
        return 1;
      }
      const cluster = await LocalCluster.up({ dir, apiNodes, workers, log: (message) => console.log(`  ${message}`) });
      console.log(describe(cluster, await cluster.status()));
      return 0;
    }
    case 'status': {
      if (!existsSync(stateFile)) {
        console.error(`floodgate: no cluster recorded in ${dir}`);
        return 1;
      }
      const cluster = await LocalCluster.load(dir);
      const status = await cluster.status();
      console.log(options.json ? JSON.stringify(statusJson(cluster, status), null, 2) : describe(cluster, status));
      return healthy(status) ? 0 : 1;
    }
    case 'down': {
      if (!existsSync(stateFile)) {
        console.error(`floodgate: no cluster recorded in ${dir}`);
        return 1;
      }
      await (await LocalCluster.load(dir)).down();
      console.log(`cluster in ${dir} stopped and removed`);
      return 0;
    }
    default:
      console.error(CLUSTER_USAGE);
      return 2;
  }
}

function count(value: string | undefined, fallback: number, name: string): number | undefined {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > NODES_MAX) {
    console.error(`floodgate: --${name} is a whole number from 1 to ${NODES_MAX}`);
    return undefined;
  }
  return parsed;
}

/**
 * Every part up, with the roles the cluster is built for: a running leader, a synchronous
 * standby, and HAProxy sending the primary port to the leader alone, the replica port to the
 * standby, and the API port to every node (a database that runs but is not routed serves no one).
 */
function healthy(status: ClusterStatus): boolean {
  const leader = status.members.find((m) => m.role === 'leader' && m.state === 'running');
  const standby = status.members.find((m) => m.role === 'sync_standby' && (m.state === 'running' || m.state === 'streaming'));
  const up = (section: string) =>
    Object.entries(status.haproxy[section] ?? {})
      .filter(([, state]) => state === 'UP')
      .map(([server]) => server);
  const routed =
    leader !== undefined &&
    standby !== undefined &&
    up('pg_primary').join() === leader.name &&
    up('pg_replica').join() === standby.name &&
    up('api').length === status.api.length;
  return status.etcd && routed && status.redis && status.simulator && status.api.every((a) => a.ready) && status.workers.every(Boolean);
}

/** The status as data: each part's health and role, whether all of it is healthy, and the URLs. */
function statusJson(cluster: LocalCluster, status: ClusterStatus) {
  return {
    dir: cluster.dir,
    healthy: healthy(status),
    ...status,
    urls: {
      api: cluster.apiUrl,
      database: cluster.databaseUrl,
      replica: cluster.replicaUrl,
      redis: cluster.redisUrl,
      haproxyStats: `http://127.0.0.1:${cluster.state.ports.haproxyStats}/stats`,
    },
  };
}

function describe(cluster: LocalCluster, status: ClusterStatus): string {
  const ok = (value: boolean) => (value ? 'up' : 'DOWN');
  const lines = [`cluster in ${cluster.dir}`, `  etcd        ${ok(status.etcd)}`];
  for (const member of status.members) {
    const lag = member.lag === undefined ? '' : `  lag ${member.lag}`;
    lines.push(`  ${member.name.padEnd(11)} ${member.role.padEnd(13)} ${member.state}  timeline ${member.timeline ?? '?'}${lag}`);
  }
  for (const [section, servers] of Object.entries(status.haproxy)) {
    lines.push(
      `  haproxy     ${section.padEnd(11)} ${Object.entries(servers)
        .map(([server, state]) => `${server} ${state}`)
        .join(', ')}`,
    );
  }
  lines.push(`  redis       ${ok(status.redis)}`, `  simulator   ${ok(status.simulator)}`);
  status.api.forEach((api, index) => {
    lines.push(`  api${index + 1}        port ${api.port}  ${api.running ? 'running' : 'STOPPED'}  ${api.ready ? 'ready' : 'NOT READY'}`);
  });
  status.workers.forEach((running, index) => {
    lines.push(`  worker${index + 1}     ${running ? 'running' : 'STOPPED'}`);
  });
  lines.push(
    '',
    `  API (HAProxy)        ${cluster.apiUrl}`,
    `  DATABASE_URL         ${cluster.databaseUrl}   (primary, via HAProxy)`,
    `  replica              ${cluster.replicaUrl}`,
    `  REDIS_URL            ${cluster.redisUrl}`,
    `  HAProxy stats        http://127.0.0.1:${cluster.state.ports.haproxyStats}/stats`,
    `  logs                 ${cluster.dir}/*.log`,
  );
  return lines.join('\n');
}
