/**
 * The one-shot admin commands: each opens the database, does its work, prints, and returns its
 * exit code. The long-running roles are in commands.ts.
 */
import { audit, formatReport } from '../audit/service.js';
import type { Config } from '../config.js';
import { generatePassword } from '../dashboard/passwords.js';
import { createUser } from '../dashboard/service.js';
import * as merchants from '../merchants/service.js';
import { sealerFor } from '../platform/crypto/sealed.js';
import { formatQueue, selectQueue } from '../platform/jobs/queue.js';
import { resealSecrets } from '../webhooks/service.js';
import { createLogger, openDatabase } from './runtime.js';

export type Options = { json?: boolean; merchant?: string; kind?: string } & Record<string, string | boolean | undefined>;
export type Role = (config: Config, args: string[], options: Options) => Promise<number>;

/** Runs fn against the database and closes it after, for one-shot admin commands. */
async function withDatabase(config: Config, fn: (db: Awaited<ReturnType<typeof openDatabase>>) => Promise<number>) {
  const log = createLogger({ ...config, logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel });
  const db = await openDatabase(config, log, { migrate: true });
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

export function missingSecretsKeys(command: string): number {
  console.error(
    `floodgate ${command} needs FLOODGATE_SECRETS_KEYS: the key that seals webhook signing secrets at rest, the same on every node ` +
      '(openssl rand -base64 32). See "Secrets at rest" in README.md.',
  );
  return 78;
}

export const ADMIN_COMMANDS: Record<string, Role> = {
  async jobs(config, _args, options) {
    return withDatabase(config, async (db) => {
      const queue = await selectQueue(db.pool);
      if (options.json) console.log(JSON.stringify(queue));
      else console.log(formatQueue(queue));
      return 0;
    });
  },

  async migrate(config) {
    const log = createLogger(config);
    const db = await openDatabase(config, log, { migrate: false });
    try {
      const { migrate } = await import('../platform/db/migrate.js');
      const applied = await migrate(db.pool);
      const { migrateJobs } = await import('../platform/jobs/runner.js');
      const { DIRECTLY_WRITTEN_TASKS } = await import('../sales/jobs.js');
      await migrateJobs(db.pool, DIRECTLY_WRITTEN_TASKS);
      console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
      return 0;
    } finally {
      await db.close();
    }
  },

  async merchants(config, args, options) {
    const [action, ...names] = args;
    const name = names.join(' ').trim();
    if (action !== 'create' || !name) {
      console.error('usage: floodgate merchants create NAME [--json]');
      return 2;
    }
    if (name.length > 200) {
      console.error('floodgate: a merchant name is at most 200 characters');
      return 2;
    }
    return withDatabase(config, async (db) => {
      const created = await merchants.createMerchant(db.pool, name);
      if (options.json) console.log(JSON.stringify(created));
      else {
        console.log(`merchant ${created.merchant.id} (${created.merchant.name})`);
        console.log(`secret key:      ${created.secret_key}`);
        console.log(`publishable key: ${created.publishable_key}`);
        console.log('These keys are shown once; only their hashes are stored.');
      }
      return 0;
    });
  },

  async keys(config, args, options) {
    const [action, keyId] = args;
    if (action === 'revoke') {
      if (!keyId) {
        console.error('usage: floodgate keys revoke KEY_ID');
        return 2;
      }
      return withDatabase(config, async (db) => {
        const revoked = await merchants.revokeKey(db.pool, keyId);
        if (!revoked) {
          console.error(`floodgate: no key ${keyId}`);
          return 1;
        }
        console.log(options.json ? JSON.stringify(revoked) : `revoked ${revoked.key_id} (${revoked.display_prefix}...)`);
        return 0;
      });
    }
    if ((action !== 'create' && action !== 'list') || !options.merchant) {
      console.error('usage: floodgate keys create|list --merchant MERCHANT_ID [--kind secret|publishable] [--json]');
      return 2;
    }
    const merchantId = options.merchant;
    if (action === 'list') {
      return withDatabase(config, async (db) => {
        // A mistyped id is not a merchant without keys: say so, as keys create does.
        if (!(await merchants.merchantExists(db.pool, merchantId))) {
          console.error(`floodgate: no merchant ${merchantId}`);
          return 1;
        }
        const keys = await merchants.listKeys(db.pool, merchantId);
        if (options.json) console.log(JSON.stringify(keys));
        else
          for (const key of keys)
            console.log(`${key.key_id}  ${key.kind.padEnd(11)}  ${key.display_prefix}...  ${key.revoked_at ? 'revoked' : 'active'}`);
        return 0;
      });
    }
    if (options.kind !== 'secret' && options.kind !== 'publishable') {
      console.error('floodgate: --kind is secret or publishable');
      return 2;
    }
    const kind = options.kind;
    return withDatabase(config, async (db) => {
      const created = await merchants.createKey(db.pool, merchantId, kind);
      if (created.kind === 'merchant_missing') {
        console.error(`floodgate: no merchant ${merchantId}`);
        return 1;
      }
      const out = { key_id: created.keyId, kind, key: created.key };
      console.log(options.json ? JSON.stringify(out) : `${created.keyId}: ${created.key}\nShown once; only its hash is stored.`);
      return 0;
    });
  },

  async secrets(config, args) {
    if (args[0] !== 'reseal') {
      console.error('usage: floodgate secrets reseal');
      return 2;
    }
    if (!config.secretsKeys) return missingSecretsKeys('secrets reseal');
    const sealer = sealerFor(config.secretsKeys);
    return withDatabase(config, async (db) => {
      const changed = await resealSecrets(db.pool, sealer);
      console.log(
        `resealed the secrets of ${changed} webhook endpoint${changed === 1 ? '' : 's'} with the first key of FLOODGATE_SECRETS_KEYS`,
      );
      return 0;
    });
  },

  async users(config, args, options) {
    const [action] = args;
    const email = typeof options.email === 'string' ? options.email : undefined;
    if (action !== 'create' || !options.merchant || !email) {
      console.error(
        'usage: floodgate users create --merchant MERCHANT_ID --email EMAIL [--json]  (password on stdin, or one is generated)',
      );
      return 2;
    }
    const merchantId = options.merchant;
    // A password comes on stdin (never as an argument, which other users can see in ps); with a
    // terminal or nothing piped, one is generated and shown once.
    const piped = process.stdin.isTTY ? '' : ((await readStdin()).split('\n')[0]?.trim() ?? '');
    const password = piped || generatePassword();
    return withDatabase(config, async (db) => {
      const result = await createUser(db.pool, { merchantId, email, password }, (id) => merchants.merchantExists(db.pool, id));
      switch (result.kind) {
        case 'invalid':
          console.error(`floodgate: ${result.message}`);
          return 2;
        case 'merchant_missing':
          console.error(`floodgate: no merchant ${merchantId}`);
          return 1;
        case 'email_taken':
          console.error(`floodgate: a user with the email ${email} already exists`);
          return 1;
        case 'created': {
          const shown = piped ? {} : { password };
          if (options.json) console.log(JSON.stringify({ ...result.user, ...shown }));
          else {
            console.log(`user ${result.user.id} (${result.user.email}) of merchant ${result.user.merchant_id}`);
            if (!piped) console.log(`password: ${password}\nShown once; only its scrypt hash is stored.`);
            console.log('Sign in at /dashboard on any API node.');
          }
          return 0;
        }
      }
    });
  },

  async audit(config, _args, options) {
    try {
      return await withDatabase(config, async (db) => {
        const report = await audit(db.pool);
        console.log(options.json ? JSON.stringify(report) : formatReport(report));
        return report.violations.length === 0 ? 0 : 1;
      });
    } catch (error) {
      // 1 means violations found; 2 means the audit could not run, so they are not confused.
      console.error(`floodgate audit could not run: ${error instanceof Error ? error.message : String(error)}`);
      return 2;
    }
  },
};

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
