/**
 * `floodgate <command>`: one entry point, each role a thin function over the shared wiring.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.js';
import { keepNextTickFast } from '../platform/next-tick-shape.js';
import { ROLES } from './commands.js';

// The long-running roles: their work is traced when OTEL_EXPORTER_OTLP_ENDPOINT is set, and
// they keep nextTick fast through full collections (platform/next-tick-shape.ts).
const SERVING_ROLES = new Set(['start', 'api', 'worker']);

const USAGE = `Usage: floodgate <command> [options]

Commands:
  start [--no-demo]              everything in one process: API, provider simulator, embedded
                                 PostgreSQL when DATABASE_URL is unset; creates a demo merchant
                                 and prints its keys (--no-demo: neither)
  api                            a stateless API node (needs DATABASE_URL and FLOODGATE_PROVIDER_URL)
  worker                         run jobs: reconciliation, housekeeping, webhook deliveries
                                 (needs DATABASE_URL and FLOODGATE_PROVIDER_URL)
  jobs [--json]                  the job queue by task: waiting, scheduled, running, failed
  simulator                      the card provider simulator on FLOODGATE_SIMULATOR_PORT
  cluster up [--api N] [--workers M] [--dir DIR]
                                 a local HA cluster: etcd, Patroni primary + synchronous
                                 standby, HAProxy, Redis, N API nodes, M workers (free ports)
  cluster status [--dir DIR] [--json]
                                 each part, its role and health; exit 1 if any is unhealthy
  cluster down [--dir DIR]       destructive teardown: every process of the cluster, its directory
  migrate                        apply pending migrations and exit
  merchants create NAME [--json] create a merchant and print its keys (shown once)
  keys create --merchant ID [--kind secret|publishable] [--json]
  keys list --merchant ID [--json]
  keys revoke KEY_ID             revoke a key (by its key_... id)
  secrets reseal                 seal every webhook secret again with the first key of
                                 FLOODGATE_SECRETS_KEYS (a key rotation's last step)
  users create --merchant ID --email EMAIL [--json]
                                 a dashboard user (password on stdin, else generated and shown once)
  audit [--json]                 check the money invariants; exit 1 on any violation,
                                 2 when the audit cannot run
  drill [options]                rehearse a sale: a calm baseline, then a surge of buyers who
                                 queue, hold, order and pay; audit, verdict table, HTML report;
                                 exit 1 when an invariant fails. Options:
      --target URL --secret-key KEY   a running deployment (default: a start of its own)
      --buyers N (500)  --surge X (10)  --rate R (20 admissions/s)  --duration S (60)
      --stock UNITS (buyers/2)  --baseline N  --abandon SHARE (0.05)
      --report FILE (./.floodgate/drills/drill-<time>.html)  --no-progress  --json
  help                           this text

Configuration is read from the environment; see README.md.`;

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      merchant: { type: 'string' },
      kind: { type: 'string', default: 'secret' },
      dir: { type: 'string' },
      api: { type: 'string' },
      workers: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
      // floodgate drill
      target: { type: 'string' },
      'secret-key': { type: 'string' },
      buyers: { type: 'string' },
      surge: { type: 'string' },
      rate: { type: 'string' },
      duration: { type: 'string' },
      stock: { type: 'string' },
      baseline: { type: 'string' },
      abandon: { type: 'string' },
      report: { type: 'string' },
      'no-progress': { type: 'boolean', default: false },
      // floodgate users create
      email: { type: 'string' },
      // floodgate start
      'no-demo': { type: 'boolean', default: false },
    },
  });
  const [command, ...rest] = positionals;
  if (!command || command === 'help' || values.help) {
    console.log(USAGE);
    return command || values.help ? 0 : 2;
  }
  const role = ROLES[command];
  if (!role) {
    console.error(`floodgate: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }
  const config = loadConfig();
  if (SERVING_ROLES.has(command)) keepNextTickFast();
  // Tracing starts before any role serves, so the first request is traced too.
  if (config.otelEndpoint && SERVING_ROLES.has(command)) {
    const { startTracing } = await import('../platform/observability/tracing-sdk.js');
    const tracing = startTracing({ endpoint: config.otelEndpoint, serviceName: config.otelServiceName });
    process.once('beforeExit', () => void tracing.shutdown());
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.prependOnceListener(signal, () => void tracing.shutdown());
  }
  return role(config, rest, values);
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined && code !== -1) process.exit(code);
  },
  (error: unknown) => {
    if (error instanceof ConfigError) console.error(error.message);
    else if (error instanceof TypeError && (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      console.error(`floodgate: ${error.message}\n\n${USAGE}`);
    } else console.error(`floodgate: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(error instanceof ConfigError ? 78 : 1);
  },
);
