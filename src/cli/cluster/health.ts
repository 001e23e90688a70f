/**
 * How a local cluster is doing, as its parts say it: Patroni's members and their roles,
 * HAProxy's servers by section, and whether each daemon runs and each API node is ready.
 */
import type { ClusterPorts } from './configs.js';
import { isRunning, waitFor } from './processes.js';
import type { ClusterState } from './state.js';

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

/** Patroni's view of the members, from any node's REST API that answers. */
export async function patroniMembers(ports: ClusterPorts): Promise<MemberStatus[]> {
  for (const node of ports.nodes) {
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

/** HAProxy's view: section → server → status, from its stats page. */
export async function haproxyServers(ports: ClusterPorts): Promise<Record<string, Record<string, string>>> {
  const response = await fetch(`http://127.0.0.1:${ports.haproxyStats}/stats;csv`, { signal: AbortSignal.timeout(1_000) });
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
export async function waitDatabaseHealthy(ports: ClusterPorts, timeoutMs: number): Promise<void> {
  await waitFor(
    'PostgreSQL leader, synchronous standby and HAProxy routing',
    timeoutMs,
    async () => {
      const members = await patroniMembers(ports);
      const leader = members.find((m) => m.role === 'leader' && m.state === 'running');
      const standby = members.find((m) => m.role === 'sync_standby' && (m.state === 'running' || m.state === 'streaming'));
      if (!leader || !standby || !(standby.lag === 0 || standby.lag === '0')) return undefined;
      const servers = await haproxyServers(ports);
      const upPrimary = Object.entries(servers.pg_primary ?? {}).filter(([, status]) => status === 'UP');
      const upReplica = Object.entries(servers.pg_replica ?? {}).filter(([, status]) => status === 'UP');
      return upPrimary.length === 1 && upPrimary[0]?.[0] === leader.name && upReplica.length === 1 && upReplica[0]?.[0] === standby.name
        ? true
        : undefined;
    },
    300,
  );
}

/** Whether the recorded pid (if any) is a running process. */
export function running(pid: number | undefined): boolean {
  return pid !== undefined && isRunning(pid);
}

export async function clusterStatus(state: ClusterState): Promise<ClusterStatus> {
  const ping = async (url: string) => {
    try {
      return (await fetch(url, { signal: AbortSignal.timeout(1_000) })).ok;
    } catch {
      return false;
    }
  };
  const { pids, ports } = state;
  return {
    etcd: await ping(`http://127.0.0.1:${ports.etcdClient}/health`),
    members: await patroniMembers(ports),
    haproxy: await haproxyServers(ports).catch(() => ({})),
    redis: running(pids.redis),
    simulator: running(pids.simulator),
    api: await Promise.all(
      ports.api.map(async (port, index) => ({
        port,
        running: running(pids.api[index]),
        ready: await ping(`http://127.0.0.1:${port}/readyz`),
      })),
    ),
    workers: pids.workers.map((pid) => isRunning(pid)),
  };
}
