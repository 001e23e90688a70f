/**
 * `cluster down` kills the processes that name the cluster's directory, and only those: a
 * cluster in `$TMPDIR/floodgate-cluster` must not take down one in `$TMPDIR/floodgate-cluster-x`.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { findMarked, mentions } from './processes.js';

test('a directory is mentioned by its own path and paths inside it, not by a longer name', () => {
  assert.equal(mentions('postgres -D /tmp/fc/pg1/data', '/tmp/fc'), true);
  assert.equal(mentions('FLOODGATE_CLUSTER_DIR=/tmp/fc\0HOME=/root\0', '/tmp/fc'), true);
  assert.equal(mentions('haproxy -f /tmp/fc', '/tmp/fc'), true);
  assert.equal(mentions('FLOODGATE_CLUSTER_DIR=/tmp/fc-a1B2c3\0', '/tmp/fc'), false);
  assert.equal(mentions('etcd --data-dir /tmp/fc2/etcd', '/tmp/fc'), false);
  assert.equal(mentions('a /tmp/fc.old b /tmp/fc/x', '/tmp/fc'), true, 'a later mention counts');
});

test('findMarked finds the processes naming the directory, not a neighbour whose name starts the same', async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), 'floodgate-marked-'));
  const dir = path.join(base, 'floodgate-cluster');
  const children: ChildProcess[] = [];
  const sleeper = (args: string[], env: Record<string, string> = {}) => {
    // sh's $0 is the argument after the script: it stands in a command line that names a path.
    const child = spawn('sh', ['-c', 'sleep 60', ...args], { env: { PATH: process.env.PATH ?? '', ...env }, stdio: 'ignore' });
    children.push(child);
    return child.pid as number;
  };
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await rm(base, { recursive: true, force: true });
  });
  const byEnv = sleeper([], { FLOODGATE_CLUSTER_DIR: dir });
  const byArg = sleeper([`${dir}/pg1/patroni.yml`]);
  const neighbourEnv = sleeper([], { FLOODGATE_CLUSTER_DIR: `${dir}-Ab12Cd` });
  const neighbourArg = sleeper([`${dir}-Ab12Cd/pg1/patroni.yml`]);
  const found = new Set(findMarked(dir));
  assert.ok(found.has(byEnv), 'named in its environment');
  assert.ok(found.has(byArg), 'named in its command line');
  assert.equal(found.has(neighbourEnv), false, 'another cluster, by environment');
  assert.equal(found.has(neighbourArg), false, 'another cluster, by command line');
});
