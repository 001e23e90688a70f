/**
 * How the schema is distributed when one PostgreSQL is not enough (docs/scaling.md): every
 * table is sharded by merchant_id on Citus, except the reference tables listed here, which are
 * small, read everywhere and copied to every node. test/citus-ready.test.ts holds every
 * migration to this: a primary key, unique index or foreign key that does not lead with the
 * distribution column fails the build.
 */
export const DISTRIBUTION_COLUMN = 'merchant_id';

/**
 * Tables copied to every node instead of sharded. schema_migrations is the migration runner's
 * bookkeeping, one row per migration. The job queue's tables live in the graphile_worker
 * schema, on the coordinator, and are not part of the public schema checked here.
 */
export const REFERENCE_TABLES: readonly string[] = [
  'schema_migrations',
  // Sign-in lookups that arrive without a merchant (a cookie's token, an email address): small
  // tables, found by their own key, so they are copied to every node rather than sharded.
  'dashboard_users',
  'dashboard_sessions',
  'hosted_sessions',
];
