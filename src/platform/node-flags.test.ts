/**
 * Node takes its flags on its command line, so the launchers that cannot import
 * SERVER_NODE_FLAGS (the npm scripts, the Kubernetes manifests)
 * spell them out; they must say the same. The launchers in TypeScript import the list itself.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { SERVER_NODE_FLAGS } from './node-flags.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

test('every launcher that spells out the server flags spells out all of them', () => {
  const scripts = JSON.parse(read('package.json')).scripts as Record<string, string>;
  const launchers: [string, string][] = [
    ['npm start', scripts.start ?? ''],
    ['npm run floodgate', scripts.floodgate ?? ''],
    ['deploy/kubernetes/api.yaml', read('deploy/kubernetes/api.yaml')],
    ['deploy/kubernetes/worker.yaml', read('deploy/kubernetes/worker.yaml')],
  ];
  for (const [launcher, text] of launchers) {
    for (const flag of SERVER_NODE_FLAGS) assert.ok(text.includes(flag), `${launcher} runs node with ${flag}`);
  }
});

test('Node starts with the flags (a misspelt V8 flag stops it with "bad option")', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [
    ...SERVER_NODE_FLAGS,
    '-e',
    'process.stdout.write(JSON.stringify(process.execArgv))',
  ]);
  assert.deepEqual(JSON.parse(stdout), [...SERVER_NODE_FLAGS, '-e', 'process.stdout.write(JSON.stringify(process.execArgv))']);
});
