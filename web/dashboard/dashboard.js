// Live charts for the operator dashboard: polls the JSON the page names (data-source) every
// 2 seconds, fills the cards and redraws uPlot charts. No build step, no framework.
(() => {
  const POLL_MS = 2000;
  const POINTS_MAX = 150;
  const width = () => Math.min(900, document.querySelector('main').clientWidth - 10);

  function chart(container, title, labels) {
    const el = document.createElement('figure');
    el.className = 'chart';
    el.setAttribute('aria-label', title);
    container.appendChild(el);
    const data = [[], ...labels.map(() => [])];
    const plot = new uPlot(
      {
        title,
        width: width(),
        height: 200,
        series: [{}, ...labels.map((label, i) => ({ label, stroke: ['#1f77b4', '#ff7f0e', '#d62728', '#2ca02c'][i % 4], width: 2 }))],
      },
      data,
      el,
    );
    return { plot, data, el };
  }

  function fill(cards, values) {
    for (const field of cards.querySelectorAll('[data-field]')) {
      const value = values[field.dataset.field];
      field.textContent = value === null || value === undefined ? 'n/a' : String(value);
    }
  }

  function push(target, t, values) {
    target.data[0].push(t);
    values.forEach((value, i) => {
      target.data[i + 1].push(value);
    });
    if (target.data[0].length > POINTS_MAX) for (const series of target.data) series.shift();
    target.plot.setData(target.data);
    target.el.dataset.points = String(target.data[0].length);
  }

  async function poll(source) {
    const response = await fetch(source, { credentials: 'same-origin', headers: { accept: 'application/json' } });
    if (response.status === 401) {
      window.location.href = '/dashboard/login?expired=1';
      return undefined;
    }
    return response.ok ? response.json() : undefined;
  }

  function startLive(container) {
    const cards = document.getElementById('live-cards');
    const charts = {
      rate: chart(container, 'Requests per second', ['requests/s']),
      latency: chart(container, 'Latency (ms)', ['p50', 'p95', 'p99']),
      errors: chart(container, 'Error ratio (5xx)', ['5xx share']),
      jobs: chart(container, 'Jobs waiting and oldest age (s)', ['waiting', 'oldest s']),
    };
    let shown = 0;
    const tick = async () => {
      const body = await poll(container.dataset.source);
      if (!body) return;
      const points = body.points;
      const last = points[points.length - 1];
      if (last) {
        fill(cards, {
          ...last,
          p99Ms: last.p99Ms === null ? 'n/a' : `${last.p99Ms} ms`,
          errorRatio: `${(last.errorRatio * 100).toFixed(1)}%`,
          oldestJobSeconds: last.oldestJobSeconds === null ? 'n/a' : `${last.oldestJobSeconds.toFixed(0)} s`,
          breakerOpen: last.breakerOpen === null ? 'n/a' : last.breakerOpen ? 'OPEN' : 'closed',
          replicaLagSeconds: last.replicaLagSeconds === null ? 'no replicas' : `${last.replicaLagSeconds.toFixed(1)} s`,
        });
      }
      for (const point of points.filter((p) => p.t > shown)) {
        push(charts.rate, point.t, [point.requestsPerSecond]);
        push(charts.latency, point.t, [point.p50Ms, point.p95Ms, point.p99Ms]);
        push(charts.errors, point.t, [point.errorRatio]);
        push(charts.jobs, point.t, [point.jobsWaiting, point.oldestJobSeconds]);
        shown = point.t;
      }
    };
    tick();
    setInterval(tick, POLL_MS);
  }

  function startSale(container) {
    const cards = document.getElementById('sale-cards');
    const line = chart(container, 'Waiting, admitted, held, sold', ['waiting', 'admitted', 'held', 'sold']);
    const rate = chart(container, 'Admissions per second', ['admitted/s']);
    let previous;
    const tick = async () => {
      const body = await poll(container.dataset.source);
      if (!body) return;
      const admissionRate = previous && body.t > previous.t ? (body.admittedTotal - previous.admittedTotal) / (body.t - previous.t) : 0;
      fill(cards, { ...body, admissionRate: admissionRate.toFixed(1) });
      if (!previous || body.t > previous.t) {
        push(line, body.t, [body.waiting, body.admitted, body.held, body.sold]);
        push(rate, body.t, [admissionRate]);
        previous = body;
      }
    };
    tick();
    setInterval(tick, POLL_MS);
  }

  window.addEventListener('DOMContentLoaded', () => {
    const liveCharts = document.getElementById('live-charts');
    if (liveCharts) startLive(liveCharts);
    const saleCharts = document.getElementById('sale-charts');
    if (saleCharts) startSale(saleCharts);
  });
})();
