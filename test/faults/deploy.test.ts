/**
 * The shipped production examples (deploy/haproxy.cfg, deploy/patroni/*.yml) and the local
 * cluster's generated HAProxy configuration are valid for the real programs, and say what the
 * code relies on: /readyz as the API check, POST never retried once it reached a server.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { haproxy503, haproxyConfig } from '../../src/cli/cluster/configs.js';
import { freePort } from '../../src/cli/cluster/processes.js';
import { faultsSkip } from './engines.js';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '../..');
const skip = faultsSkip();
let dir: string;

async function haproxyValid(config: string): Promise<void> {
  const file = path.join(dir, `h-${Math.random().toString(36).slice(2)}.cfg`);
  await writeFile(file, config);
  await run('haproxy', ['-c', '-f', file]);
}

function section(config: string, name: string): string {
  const start = config.indexOf(`listen ${name}\n`);
  assert.ok(start >= 0, `a listen ${name} section`);
  const next = config.indexOf('\nlisten ', start + 1);
  return config.slice(start, next < 0 ? undefined : next);
}

describe('deployment configurations', { skip }, () => {
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'floodgate-deploy-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('deploy/haproxy.cfg is valid and checks the paths the API serves', async () => {
    const shipped = await readFile(path.join(ROOT, 'deploy/haproxy.cfg'), 'utf8');
    const errorFile = path.join(ROOT, 'deploy/haproxy/503.http');
    // Its addresses and the error file's install path are the operator's; the rest is checked as shipped.
    await haproxyValid(shipped.replace('/etc/haproxy/errors/floodgate-503.http', errorFile).replaceAll(/10\.0\.0\.\d+/g, '127.0.0.1'));
    const api = section(shipped, 'api');
    assert.match(api, /http-check send meth GET uri \/readyz\n/);
    assert.match(api, /^ {2}retry-on conn-failure$/m, 'only a connection that was never made is retried');
    assert.doesNotMatch(api, /^ +[^#\n]*shutdown-sessions/m, 'a draining node keeps its requests');
    assert.match(section(shipped, 'pg_primary'), /uri \/primary\n/);
    assert.match(section(shipped, 'pg_replica'), /uri \/replica\?lag=\d+\n/);
    const body = (await readFile(errorFile, 'utf8')).split('\n\n')[1] ?? '';
    assert.equal(JSON.parse(body).error.code, 'service_unavailable');
  });

  test('the local cluster writes an HAProxy configuration HAProxy accepts', async () => {
    const errorFile503 = path.join(dir, '503.http');
    await writeFile(errorFile503, haproxy503());
    const port = await freePort();
    const ports = {
      etcdClient: port,
      etcdPeer: port,
      nodes: [
        { name: 'pg1', pgPort: port, restPort: port },
        { name: 'pg2', pgPort: port, restPort: port },
      ],
      pgPrimary: await freePort(),
      pgReplica: await freePort(),
      haproxyStats: await freePort(),
      redis: port,
      simulator: port,
      api: [port, port],
      apiBalancer: await freePort(),
    };
    const config = haproxyConfig(ports, { maxReplicaLagBytes: 1_048_576, errorFile503 });
    await haproxyValid(config);
    assert.match(section(config, 'api'), /^ {2}retry-on conn-failure$/m);
  });

  for (const node of ['pg1', 'pg2']) {
    test(`deploy/patroni/${node}.yml passes Patroni's own validation`, async () => {
      const shipped = await readFile(path.join(ROOT, `deploy/patroni/${node}.yml`), 'utf8');
      assert.match(shipped, /synchronous_mode: true/);
      assert.match(shipped, /use_pg_rewind: true/);
      assert.match(shipped, /^etcd3:/m);
      // The validator checks that the listen ports are free: give it free ones.
      const file = path.join(dir, `${node}.yml`);
      await writeFile(
        file,
        shipped
          .replace('listen: 0.0.0.0:5432', `listen: 127.0.0.1:${await freePort()}`)
          .replace('listen: 0.0.0.0:8008', `listen: 127.0.0.1:${await freePort()}`),
      );
      const result = await run('/usr/bin/patroni', ['--validate-config', file]).catch((error) => error);
      assert.equal(result.code ?? 0, 0, `${result.stdout ?? ''}${result.stderr ?? ''}`);
    });
  }
});
