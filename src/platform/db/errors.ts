/**
 * Which database errors mean "the database is not there right now" — a failover, a restart,
 * a network cut, a saturated pool — as opposed to a bug or a constraint. The HTTP edge answers
 * those with 503 and Retry-After: the request did not happen, or (a connection cut during
 * COMMIT) its outcome is unknown, and a retry with the same Idempotency-Key settles either.
 */

// SQLSTATEs a client meets while PostgreSQL fails over or restarts.
const UNAVAILABLE_SQLSTATES = new Set([
  '08000', // connection_exception
  '08003', // connection_does_not_exist
  '08006', // connection_failure
  '08001', // sqlclient_unable_to_establish_sqlconnection
  '08004', // sqlserver_rejected_establishment_of_sqlconnection
  '25006', // read_only_sql_transaction: an old primary, now a standby, for a moment still routed to
  '53300', // too_many_connections
  '57P01', // admin_shutdown: a fast shutdown or a demotion terminated the session
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now: starting up, shutting down, in recovery
  // Ours (pool.ts): a commit the synchronous standby never confirmed is not acknowledged.
  'floodgate_sync_replication_canceled',
]);

// Socket errors from node-postgres when the connection (or HAProxy in front of it) goes away.
const UNAVAILABLE_SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

// node-postgres reports a lost or never-made connection with plain messages and no code.
const UNAVAILABLE_MESSAGES = [
  'Connection terminated unexpectedly',
  'Connection terminated',
  'Connection terminated due to connection timeout',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
];

export function isDatabaseUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_SQLSTATES.has(code) || UNAVAILABLE_SOCKET_CODES.has(code))) return true;
  return UNAVAILABLE_MESSAGES.includes(error.message);
}
