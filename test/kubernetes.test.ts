/**
 * deploy/kubernetes/ parses, and names what the code really serves: the API's port (the one
 * its configuration listens on) and probe paths (asked of the real app), the roles its
 * containers run (the CLI's own), the variables it sets (ones the configuration reads, with
 * values it accepts), Services and PodDisruptionBudgets that select the pods they mean.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { ROLES } from '../src/cli/commands.js';
import { loadConfig } from '../src/config.js';
import { createTestDatabase, setupTestContext, TEST_PROVIDER_WEBHOOK_SECRET } from './helpers.js';
import { startFloodgate } from './processes.js';

const DIR = path.resolve(import.meta.dirname, '../deploy/kubernetes');
// The configuration's sources: config.ts and the connection URLs it reads through config-urls.ts.
const CONFIG_SOURCE = ['../src/config.ts', '../src/config-urls.ts']
  .map((file) => readFileSync(path.resolve(import.meta.dirname, file), 'utf8'))
  .join('\n');

type Doc = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  // biome-ignore lint/suspicious/noExplicitAny: manifests are free-form YAML; each test checks the fields it reads.
  spec?: any;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
};

const docs: Doc[] = readdirSync(DIR)
  .filter((file) => file.endsWith('.yaml'))
  .flatMap((file) =>
    parseAllDocuments(readFileSync(path.join(DIR, file), 'utf8')).map((doc) => {
      assert.deepEqual(doc.errors, [], `${file} parses`);
      return doc.toJS() as Doc;
    }),
  );
const find = (kind: string, name: string) => {
  const doc = docs.find((candidate) => candidate.kind === kind && candidate.metadata.name === name);
  assert.ok(doc, `${kind} ${name} is shipped`);
  return doc;
};
const configMap = find('ConfigMap', 'floodgate');
const secret = find('Secret', 'floodgate');
/** The environment a container started from the ConfigMap and Secret sees. */
const environment: Record<string, string> = { ...configMap.data, ...secret.stringData };

function container(deployment: Doc) {
  const containers = deployment.spec.template.spec.containers;
  assert.equal(containers.length, 1);
  return containers[0];
}

function matches(selector: Record<string, string>, labels: Record<string, string>): boolean {
  return Object.entries(selector).every(([name, value]) => labels[name] === value);
}

const t = await setupTestContext();

describe('Kubernetes manifests', () => {
  test('every document is a known kind with a name', () => {
    assert.ok(docs.length >= 7);
    for (const doc of docs) {
      assert.ok(['ConfigMap', 'Secret', 'Deployment', 'Service', 'PodDisruptionBudget'].includes(doc.kind), doc.kind);
      assert.ok(doc.apiVersion && doc.metadata?.name, JSON.stringify(doc).slice(0, 80));
    }
  });

  test('the environment names variables the configuration reads, with values it accepts', () => {
    for (const name of Object.keys(environment))
      assert.ok(CONFIG_SOURCE.includes(name), `${name} is read by src/config.ts or src/config-urls.ts`);
    const config = loadConfig(environment);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.replicaUrls.length, 1);
    assert.match(config.redisUrl ?? '', /^redis\+cluster:/);
  });

  for (const [name, role] of [
    ['floodgate-api', 'api'],
    ['floodgate-worker', 'worker'],
  ] as const) {
    test(`${name}: runs the ${role} role, with requests, a preStop, a grace period and a PodDisruptionBudget`, () => {
      const deployment = find('Deployment', name);
      const spec = container(deployment);
      assert.deepEqual(spec.command.slice(-1), [role]);
      assert.ok(role in ROLES, `${role} is a floodgate role`);
      assert.ok(spec.resources.requests.cpu && spec.resources.requests.memory, 'cpu and memory requests');
      assert.ok(spec.lifecycle.preStop.exec.command.length > 0, 'a preStop hook');
      assert.ok(deployment.spec.template.spec.terminationGracePeriodSeconds >= 30);
      const podLabels = deployment.spec.template.metadata.labels;
      assert.ok(matches(deployment.spec.selector.matchLabels, podLabels));
      const budgets = docs.filter((doc) => doc.kind === 'PodDisruptionBudget' && matches(doc.spec.selector.matchLabels, podLabels));
      assert.equal(budgets.length, 1, 'one PodDisruptionBudget selects its pods');
      assert.ok(budgets[0]?.spec.maxUnavailable === 1 || budgets[0]?.spec.minAvailable !== undefined);
      // A budget must not also select the other role's pods.
      const other = docs.find((doc) => doc.kind === 'Deployment' && doc.metadata.name !== name) as Doc;
      assert.ok(!matches(budgets[0]?.spec.selector.matchLabels, other.spec.template.metadata.labels));
    });
  }

  test('floodgate-api: the container port is the one the API listens on, and the probes ask paths it answers', async () => {
    const deployment = find('Deployment', 'floodgate-api');
    const spec = container(deployment);
    const port = spec.ports.find((candidate: { name: string }) => candidate.name === 'http');
    assert.equal(port.containerPort, loadConfig(environment).port);
    const probes = { startup: spec.startupProbe, liveness: spec.livenessProbe, readiness: spec.readinessProbe };
    assert.equal(probes.liveness.httpGet.path, '/livez');
    assert.equal(probes.readiness.httpGet.path, '/readyz');
    for (const [kind, probe] of Object.entries(probes)) {
      assert.equal(probe.httpGet.port, 'http', `${kind} probe on the named port`);
      // The real app, as `floodgate api` builds it, answers the probe's path.
      const response = await t.app.inject({ method: 'GET', url: probe.httpGet.path });
      assert.equal(response.statusCode, 200, `${kind} probe ${probe.httpGet.path}: ${response.body}`);
    }
    const service = find('Service', 'floodgate-api');
    assert.ok(matches(service.spec.selector, deployment.spec.template.metadata.labels));
    assert.equal(service.spec.ports[0].targetPort, 'http');
  });

  test('floodgate-worker: the probes ask the worker’s health port, and a real worker answers their paths', async () => {
    const spec = container(find('Deployment', 'floodgate-worker'));
    const port = spec.ports.find((candidate: { name: string }) => candidate.name === 'health');
    assert.ok(port, 'the worker container names its health port');
    assert.equal(spec.livenessProbe.httpGet.port, 'health');
    assert.equal(spec.readinessProbe.httpGet.port, 'health');
    assert.equal(port.containerPort, loadConfig({}).workerMetricsPort);
    const { url: databaseUrl } = await createTestDatabase();
    const worker = await startFloodgate('worker', {
      DATABASE_URL: databaseUrl,
      FLOODGATE_PROVIDER_URL: t.sim.url,
      FLOODGATE_PROVIDER_WEBHOOK_SECRET: TEST_PROVIDER_WEBHOOK_SECRET,
      FLOODGATE_WORKER_METRICS_PORT: '0',
      FLOODGATE_LOG_LEVEL: 'info',
    });
    after(() => worker.stop());
    for (const probe of [spec.livenessProbe, spec.readinessProbe]) {
      const response = await fetch(`${worker.url}${probe.httpGet.path}`);
      assert.equal(response.status, 200, `${probe.httpGet.path}: ${await response.text()}`);
    }
  });
});
