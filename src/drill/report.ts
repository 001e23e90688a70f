/**
 * The drill's report: one self-contained HTML file (uPlot and the data inlined, nothing fetched)
 * with the verdict and charts over time, and the same data as JSON beside it.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { Verdict } from './verdict.js';

export interface Timeline {
  /** Seconds since the surge began, one entry per second. */
  seconds: number[];
  arrivals: number[];
  admitted: number[];
  held: number[];
  sold: number[];
  /** Polls answered in each second (any status): what the line costs the server. */
  polls: number[];
  errors: number[];
  p99Ms: number[];
  /** Buyers in line, as the drill saw them, sampled each second. */
  waiting: number[];
  /** Jobs due and not yet running, from the target's /metrics (null where it was not read). */
  jobsWaiting: Array<number | null>;
}

export interface DrillReport {
  startedAt: string;
  target: string;
  options: Record<string, unknown>;
  verdict: Verdict;
  timeline: Timeline;
  machine: { cpus: number; loadAverage: number[]; node: string };
}

const require = createRequire(import.meta.url);

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const CHARTS = [
  { title: 'Buyers per second', series: ['arrivals', 'admitted', 'held', 'sold'] },
  { title: 'p99 latency of answers in each second (ms)', series: ['p99Ms'] },
  { title: 'Waiting in line and jobs waiting', series: ['waiting', 'jobsWaiting'] },
  { title: 'Polls per second', series: ['polls'] },
  { title: 'Errors per second (4xx, 5xx, no answer)', series: ['errors'] },
];

export async function renderReport(report: DrillReport): Promise<string> {
  const uplotJs = await readFile(require.resolve('uplot/dist/uPlot.iife.min.js'), 'utf8');
  const uplotCss = await readFile(require.resolve('uplot/dist/uPlot.min.css'), 'utf8');
  const { verdict } = report;
  const rows = verdict.invariants
    .map(
      (row) =>
        `<tr class="${row.ok ? 'ok' : 'fail'}"><td>${escapeHtml(row.name)}</td><td>${row.value ?? 'n/a'}</td><td>${row.ok ? 'ok' : 'FAIL'}</td><td>${escapeHtml(row.note)}</td></tr>`,
    )
    .join('');
  const buyers = Object.entries(verdict.buyers)
    .map(([outcome, count]) => `<tr><td>${escapeHtml(outcome)}</td><td>${count}</td></tr>`)
    .join('');
  const errors = Object.entries(verdict.errors)
    .sort((a, b) => b[1] - a[1])
    .map(([kind, count]) => `<tr><td>${escapeHtml(kind)}</td><td>${count}</td></tr>`)
    .join('');
  const latency = Object.entries(verdict.byKind)
    .flatMap(([kind, phases]) =>
      Object.entries(phases).map(
        ([phase, p]) =>
          `<tr><td>${kind}</td><td>${phase}</td><td>${p.count}</td><td>${p.p50.toFixed(1)}</td><td>${p.p95.toFixed(1)}</td><td>${p.p99.toFixed(1)}</td></tr>`,
      ),
    )
    .join('');
  const ratio = verdict.admittedP99.ratio;
  // The data is embedded as JSON inside a script element: '<' is escaped so no string in it can close the element.
  const data = JSON.stringify({ timeline: report.timeline, charts: CHARTS }).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Floodgate drill ${escapeHtml(report.startedAt)}: ${verdict.ok ? 'PASS' : 'FAIL'}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${uplotCss}
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;max-width:1100px;color:#111}
h1 .pass{color:#0a7d32}h1 .fail{color:#b3261e}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}
code{word-break:break-all}tr.fail td{background:#fde7e7}tr.ok td:nth-child(3){color:#0a7d32}
.charts{display:grid;grid-template-columns:1fr;gap:1rem}
</style></head><body>
<h1>Floodgate drill: <span class="${verdict.ok ? 'pass' : 'fail'}">${verdict.ok ? 'PASS' : 'FAIL'}</span></h1>
<p>Started ${escapeHtml(report.startedAt)} against ${escapeHtml(report.target)}. Options: <code>${escapeHtml(JSON.stringify(report.options))}</code>.
Machine: ${report.machine.cpus} cores, load average ${report.machine.loadAverage.map((n) => n.toFixed(2)).join(' / ')} at the end, Node ${escapeHtml(report.machine.node)}.
The machine may be shared: compare the ratios of one run, not absolute numbers across runs.</p>
<h2>Invariants (each must be 0)</h2>
<table><tr><th>check</th><th>value</th><th></th><th>note</th></tr>${rows}</table>
<p>Admitted requests' p99 (hold, order, confirm): surge <b>${verdict.admittedP99.surgeMs.toFixed(1)} ms</b> (${verdict.admittedP99.surgeCount} requests)
against <b>${verdict.admittedP99.baselineMs.toFixed(1)} ms</b> with no surge (${verdict.admittedP99.baselineCount})${ratio === null ? '' : `: <b>${ratio.toFixed(2)}x</b> (goal: at most 2x)`}.
5xx other than 503 with Retry-After: <b>${verdict.unexpected5xx}</b>.
Time in line p50/p95/p99: ${verdict.timeInLineSeconds.p50.toFixed(1)} / ${verdict.timeInLineSeconds.p95.toFixed(1)} / ${verdict.timeInLineSeconds.p99.toFixed(1)} s.</p>
<h2>Over time</h2><div class="charts" id="charts"></div>
<h2>Buyers of the surge</h2><table><tr><th>outcome</th><th>buyers</th></tr>${buyers}</table>
<h2>Errors by kind</h2><table><tr><th>status and code</th><th>answers</th></tr>${errors || '<tr><td>none</td><td>0</td></tr>'}</table>
<h2>Latency by request (ms)</h2><table><tr><th>request</th><th>phase</th><th>count</th><th>p50</th><th>p95</th><th>p99</th></tr>${latency}</table>
<script>${uplotJs}</script>
<script id="drill-data" type="application/json">${data}</script>
<script>
const { timeline, charts } = JSON.parse(document.getElementById('drill-data').textContent);
const colors = ['#1f77b4', '#2ca02c', '#ff7f0e', '#9467bd', '#d62728'];
for (const chart of charts) {
  const el = document.createElement('div');
  document.getElementById('charts').appendChild(el);
  new uPlot({
    title: chart.title, width: Math.min(1100, window.innerWidth - 40), height: 220,
    scales: { x: { time: false } },
    axes: [{ label: 'seconds since the surge began' }, {}],
    series: [{}, ...chart.series.map((name, i) => ({ label: name, stroke: colors[i % colors.length], width: 2 }))],
  }, [timeline.seconds, ...chart.series.map((name) => timeline[name])], el);
}
</script>
</body></html>
`;
}
