/**
 * The engines the fault tests need. Missing ones skip the tests with a message saying so;
 * under CI=true a missing engine is a failure (.ci/run installs them).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const PROGRAMS = ['/usr/bin/patroni', 'etcd', 'haproxy', 'redis-server'];

function onPath(program: string): boolean {
  if (program.startsWith('/')) return existsSync(program);
  try {
    execFileSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function pythonModules(): boolean {
  try {
    // Patroni's etcd3 support and its PostgreSQL driver (python3-etcd, python3-psycopg2).
    execFileSync('/usr/bin/python3', ['-c', 'import etcd, psycopg2'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** What is missing, or an empty list. */
export function missingEngines(): string[] {
  const missing = PROGRAMS.filter((program) => !onPath(program));
  if (!pythonModules()) missing.push('python3-etcd/python3-psycopg2');
  if (!existsSync('/usr/lib/postgresql')) missing.push('PostgreSQL server (/usr/lib/postgresql)');
  return missing;
}

/**
 * false when the engines are there; otherwise a skip message (outside CI). Under CI=true a
 * missing engine throws: the tests must fail, not pass by skipping.
 */
export function faultsSkip(): string | false {
  const missing = missingEngines();
  if (missing.length === 0) return false;
  const message = `fault tests need ${missing.join(', ')} (apt-get install patroni etcd-server haproxy python3-etcd python3-psycopg2 redis-server)`;
  if (process.env.CI === 'true') throw new Error(`CI=true and ${message}`);
  console.log(`# SKIPPED: ${message}`);
  return message;
}
