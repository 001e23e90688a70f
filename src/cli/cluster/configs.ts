/**
 * The local cluster's configuration files, made from its ports and directory. The shipped
 * production examples (deploy/haproxy.cfg, deploy/patroni/*.yml) use the same settings; the
 * values that matter are explained there and in docs/operations.md.
 */

export interface PgNodePorts {
  name: string;
  pgPort: number;
  restPort: number;
}

export interface ClusterPorts {
  etcdClient: number;
  etcdPeer: number;
  nodes: PgNodePorts[];
  pgPrimary: number;
  pgReplica: number;
  haproxyStats: number;
  redis: number;
  simulator: number;
  api: number[];
  apiBalancer: number;
}

/** Patroni's timing: a dead primary's leader key expires after ttl; checks run every loop_wait. */
export const PATRONI_TIMING = { ttl: 10, loop_wait: 2, retry_timeout: 4 } as const;

/**
 * Patroni's configuration for one node. YAML is a superset of JSON, so this is written as JSON;
 * deploy/patroni/*.yml is the same in YAML, with comments.
 */
export function patroniConfig(options: { scope: string; node: PgNodePorts; dir: string; etcdClient: number; binDir: string }) {
  const { node, dir } = options;
  return {
    scope: options.scope,
    name: node.name,
    log: { level: 'WARNING' },
    restapi: { listen: `127.0.0.1:${node.restPort}`, connect_address: `127.0.0.1:${node.restPort}` },
    // etcd 3.4 has its v2 API off: the etcd3 section, not etcd.
    etcd3: { hosts: `127.0.0.1:${options.etcdClient}` },
    bootstrap: {
      dcs: {
        ...PATRONI_TIMING,
        maximum_lag_on_failover: 1_048_576,
        // An acknowledged commit is on the standby too, so a failover loses none.
        synchronous_mode: true,
        postgresql: {
          // Without it a returning old primary stays on its old timeline and serves stale reads.
          use_pg_rewind: true,
          use_slots: true,
          parameters: {
            wal_level: 'replica',
            hot_standby: 'on',
            wal_log_hints: 'on',
            max_connections: 100,
            max_wal_senders: 10,
            max_replication_slots: 10,
            // The default retries a missing WAL source every 5 s; a rejoin should not wait that long.
            wal_retrieve_retry_interval: '500ms',
            fsync: 'on',
          },
        },
      },
      initdb: [{ encoding: 'UTF8' }, { locale: 'C' }, 'data-checksums'],
    },
    postgresql: {
      listen: `127.0.0.1:${node.pgPort}`,
      connect_address: `127.0.0.1:${node.pgPort}`,
      data_dir: `${dir}/${node.name}/data`,
      bin_dir: options.binDir,
      pgpass: `${dir}/${node.name}/pgpass`,
      authentication: {
        superuser: { username: 'postgres', password: 'floodgate-local' },
        replication: { username: 'replicator', password: 'floodgate-local' },
        rewind: { username: 'postgres', password: 'floodgate-local' },
      },
      // Loopback only: a local cluster for development and tests.
      pg_hba: ['local all all trust', 'host all all 127.0.0.1/32 trust', 'host replication replicator 127.0.0.1/32 trust'],
      parameters: { unix_socket_directories: `${dir}/${node.name}` },
      // A fast checkpoint makes a base backup (a standby's first start, a reinit) seconds, not a minute.
      basebackup: [{ checkpoint: 'fast' }],
    },
    tags: { nofailover: false, noloadbalance: false, clonefrom: false, nosync: false },
  };
}

export function etcdArgs(ports: ClusterPorts, dir: string): string[] {
  const peer = `http://127.0.0.1:${ports.etcdPeer}`;
  const client = `http://127.0.0.1:${ports.etcdClient}`;
  return [
    '--name',
    'etcd1',
    '--data-dir',
    `${dir}/etcd`,
    '--listen-client-urls',
    client,
    '--advertise-client-urls',
    client,
    '--listen-peer-urls',
    peer,
    '--initial-advertise-peer-urls',
    peer,
    '--initial-cluster',
    `etcd1=${peer}`,
    '--initial-cluster-state',
    'new',
    '--log-level',
    'warn',
  ];
}

/** Seconds between HAProxy's health checks of each server, and the failures that mark it down. */
export const HAPROXY_CHECK = { interMs: 1_000, fall: 2, rise: 1 } as const;

/**
 * HAProxy's own 503 (no API node ready: during a database failover every node's /readyz
 * fails) in the API's error shape, with the Retry-After every 503 of ours carries.
 */
export function haproxy503(): string {
  const body = `${JSON.stringify({
    error: {
      type: 'api_error',
      code: 'service_unavailable',
      message: 'No API node can serve the request right now; retry with the same Idempotency-Key.',
    },
  })}\n`;
  return [
    'HTTP/1.1 503 Service Unavailable',
    'content-type: application/json',
    'cache-control: no-store',
    'retry-after: 2',
    'connection: close',
    `content-length: ${Buffer.byteLength(body)}`,
    '',
    body,
  ].join('\r\n');
}

/**
 * HAProxy: a primary port and a replica port chosen by Patroni's REST checks, and the API
 * nodes behind /readyz. POST is never retried on another server once it reached one:
 * `retry-on conn-failure` retries only a connection that could not be made, before any byte of
 * the request was sent.
 */
export function haproxyConfig(ports: ClusterPorts, options: { maxReplicaLagBytes: number; errorFile503: string }): string {
  const check = `check inter ${HAPROXY_CHECK.interMs} fall ${HAPROXY_CHECK.fall} rise ${HAPROXY_CHECK.rise}`;
  const pgServers = ports.nodes.map((node) => `  server ${node.name} 127.0.0.1:${node.pgPort} ${check} port ${node.restPort}`).join('\n');
  const apiServers = ports.api
    .map(
      (port, index) => `  server api${index + 1} 127.0.0.1:${port} check inter ${HAPROXY_CHECK.interMs} fall ${HAPROXY_CHECK.fall} rise 2`,
    )
    .join('\n');
  return `# Written by floodgate cluster; see deploy/haproxy.cfg for the commented production example.
global
  maxconn 4096

defaults
  timeout connect 2s
  timeout client 30m
  timeout server 30m
  timeout check 1s

listen stats
  mode http
  bind 127.0.0.1:${ports.haproxyStats}
  stats enable
  stats uri /stats
  stats refresh 1s

listen pg_primary
  mode tcp
  bind 127.0.0.1:${ports.pgPrimary}
  option httpchk
  http-check send meth GET uri /primary
  http-check expect status 200
  # A server marked down has its connections cut, so clients fail fast instead of waiting on it.
  default-server on-marked-down shutdown-sessions
${pgServers}

listen pg_replica
  mode tcp
  bind 127.0.0.1:${ports.pgReplica}
  balance roundrobin
  option httpchk
  http-check send meth GET uri /replica?lag=${options.maxReplicaLagBytes}
  http-check expect status 200
  default-server on-marked-down shutdown-sessions
${pgServers}

listen api
  mode http
  bind 127.0.0.1:${ports.apiBalancer}
  balance leastconn
  option httpchk
  http-check send meth GET uri /readyz
  http-check expect status 200
  option forwardfor
  errorfile 503 ${options.errorFile503}
  timeout client 60s
  timeout server 60s
  retries 2
  option redispatch
  retry-on conn-failure
  # No shutdown-sessions here: a draining node (marked down by its failing /readyz) finishes
  # the requests it has.
${apiServers}
`;
}
