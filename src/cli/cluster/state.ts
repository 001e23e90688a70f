/**
 * What a local cluster is: its directory, ports, daemons' pids, secrets and settings, recorded
 * in <dir>/cluster.json after every daemon it starts, so `status`, `down` and the fault tests
 * (another process) can find it. Also what the machine gives it: PostgreSQL's programs and the
 * postgres user Patroni runs as.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ClusterPorts, PgNodePorts } from './configs.js';
import { freePort } from './processes.js';

const STATE_FILE = 'cluster.json';
export const PG_NODE_NAMES = ['pg1', 'pg2'];

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

/** A new cluster's state in dir: free ports, fresh secrets, nothing started yet. */
export async function newState(options: {
  dir: string;
  apiNodes: number;
  workers: number;
  env?: Record<string, string>;
}): Promise<ClusterState> {
  const { dir } = options;
  return {
    dir,
    scope: `floodgate-${path.basename(dir).replace(/[^a-zA-Z0-9-]/g, '')}`,
    ports: await choosePorts(options.apiNodes),
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
  };
}

export async function readState(dir: string): Promise<ClusterState> {
  return JSON.parse(await readFile(path.join(dir, STATE_FILE), 'utf8')) as ClusterState;
}

export async function writeState(state: ClusterState): Promise<void> {
  await writeFile(path.join(state.dir, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
}

/** The addresses clients use: the database and the API through HAProxy, Redis directly. */
export function clusterUrls(state: ClusterState) {
  const { ports } = state;
  return {
    database: `postgres://postgres@127.0.0.1:${ports.pgPrimary}/floodgate`,
    replica: `postgres://postgres@127.0.0.1:${ports.pgReplica}/floodgate`,
    redis: `redis://127.0.0.1:${ports.redis}`,
    api: `http://127.0.0.1:${ports.apiBalancer}`,
  };
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

export function postgresUser(): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}
