/**
 * The connection URLs of the configuration (config.ts re-exports what others use): Redis, one
 * server or a cluster's seed nodes, read streaming replicas, and a URL with its password masked
 * for printing. Each reader adds what is wrong to `problems`, in words that say what to fix.
 */
type Env = Record<string, string | undefined>;

/** Where the Redis shared state lives: one server, or the seed nodes of a Redis Cluster. */
export type RedisTarget =
  | { kind: 'single'; url: string }
  | { kind: 'cluster'; nodes: Array<{ host: string; port: number }>; username?: string; password?: string; tls: boolean };

const CLUSTER_SCHEMES = ['redis+cluster:', 'rediss+cluster:'];
const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/;

/**
 * Reads REDIS_URL: `redis://` or `rediss://` names one server; `redis+cluster://[user:pass@]host:port,host:port`
 * (or `rediss+cluster://` for TLS) names seed nodes of a Redis Cluster. Throws with a message
 * saying what to fix.
 */
export function parseRedisTarget(value: string): RedisTarget {
  const scheme = value.slice(0, value.indexOf('//'));
  if (!CLUSTER_SCHEMES.includes(scheme)) {
    const parsed = new URL(value);
    if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:')
      throw new Error('must start with redis://, rediss://, redis+cluster:// or rediss+cluster://');
    return { kind: 'single', url: value };
  }
  let rest = value.slice(scheme.length + 2).replace(/\/$/, '');
  let username: string | undefined;
  let password: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const credentials = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = credentials.indexOf(':');
    username = decodeURIComponent(colon >= 0 ? credentials.slice(0, colon) : credentials) || undefined;
    password = colon >= 0 ? decodeURIComponent(credentials.slice(colon + 1)) || undefined : undefined;
  }
  const nodes = rest.split(',').map((entry) => {
    const match = HOST_PORT.exec(entry.trim());
    const port = Number(match?.[3]);
    if (!match || port < 1 || port > 65535) throw new Error(`names a cluster node "${entry}" that is not host:port`);
    return { host: (match[1] ?? match[2]) as string, port };
  });
  return { kind: 'cluster', nodes, username, password, tls: scheme === 'rediss+cluster:' };
}

/** REDIS_URL, or FLOODGATE_REDIS_CLUSTER_NODES (host:port,...) as a cluster URL. */
export function redisUrl(env: Env, problems: string[]): string | undefined {
  const nodes = env.FLOODGATE_REDIS_CLUSTER_NODES;
  let raw = env.REDIS_URL || undefined;
  if (nodes) {
    if (raw && !raw.includes('+cluster:')) {
      problems.push(
        'FLOODGATE_REDIS_CLUSTER_NODES names a Redis Cluster; REDIS_URL must then be unset, or a redis+cluster:// URL of the same nodes',
      );
      return raw;
    }
    raw ??= `redis+cluster://${nodes}`;
  }
  if (raw === undefined) return undefined;
  try {
    parseRedisTarget(raw);
  } catch (error) {
    problems.push(
      `${nodes ? 'FLOODGATE_REDIS_CLUSTER_NODES' : 'REDIS_URL'} ${(error as Error).message.replace(/^Invalid URL$/, 'is not a valid URL')}`,
    );
  }
  return raw;
}

/** FLOODGATE_REPLICA_URLS: comma-separated postgres:// URLs of streaming replicas. */
export function replicaUrls(raw: string | undefined, problems: string[]): string[] {
  if (raw === undefined || raw.trim() === '') return [];
  const urls = raw.split(',').map((entry) => entry.trim());
  for (const [index, entry] of urls.entries()) {
    try {
      const parsed = new URL(entry);
      if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') throw new Error('scheme');
    } catch {
      problems.push(`FLOODGATE_REPLICA_URLS entry ${index + 1} must be a postgres:// URL`);
    }
  }
  return urls;
}

/** Replaces the password in a connection URL so a config can be printed or logged. */
export function maskUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (CLUSTER_SCHEMES.some((scheme) => value.startsWith(`${scheme}//`))) {
    // host:port lists are no URL to WHATWG: mask whatever stands before the last @.
    const at = value.lastIndexOf('@');
    if (at < 0) return value;
    const start = value.indexOf('//') + 2;
    const credentials = value.slice(start, at);
    const colon = credentials.indexOf(':');
    return colon < 0 ? value : `${value.slice(0, start)}${credentials.slice(0, colon)}:*****${value.slice(at)}`;
  }
  try {
    const parsed = new URL(value);
    if (parsed.password) parsed.password = '*****';
    return parsed.toString();
  } catch {
    return '*****';
  }
}
