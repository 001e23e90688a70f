// The hosted sale page's only script: it polls the line, counts down, and exchanges the card
// for a provider token. Every page works without it except paying, which must not send a card
// number to this site. It reads what it needs from data- attributes (the CSP allows no inline
// script).
(() => {
  const body = document.body;
  const data = body.dataset;

  // ---- Countdowns (opening time, hold expiry) ----
  const clock = (ms) => {
    const total = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, '0');
    return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
  };
  const countdowns = [...document.querySelectorAll('[data-countdown]')];
  const tick = () => {
    for (const element of countdowns) {
      const left = Date.parse(element.dataset.countdown) - Date.now();
      element.textContent = (element.dataset.label || '{countdown}').replace('{countdown}', clock(left));
      // At zero the server decides what comes next (the sale opened, the hold expired).
      if (left <= 0 && !element.dataset.done) {
        element.dataset.done = '1';
        setTimeout(() => location.reload(), 500);
      }
    }
  };
  if (countdowns.length > 0) {
    tick();
    setInterval(tick, 1000);
  }

  // ---- Polling the line at the server's Retry-After, with jitter, paused while hidden ----
  if (data.poll) {
    let timer;
    let inFlight = false;
    const schedule = (seconds) => {
      clearTimeout(timer);
      if (document.hidden) return;
      // ±20% jitter keeps a crowd that loaded the page together from polling together. The
      // floor is the server's FRONT_POLL_MS_MIN (src/admission/domain.ts), the soonest it tells.
      const ms = Math.max(100, seconds * 1000 * (0.8 + Math.random() * 0.4));
      timer = setTimeout(poll, ms);
    };
    const poll = async () => {
      if (inFlight || document.hidden) return;
      inFlight = true;
      let retry = Number(data.retry) || 2;
      try {
        const response = await fetch(data.poll, { credentials: 'same-origin', headers: { accept: 'application/json' } });
        retry = Number(response.headers.get('retry-after')) || retry;
        if (response.ok) {
          const line = await response.json();
          // To the millisecond: at the front of the line, when this buyer's admission is due.
          if (typeof line.retry_after_ms === 'number') retry = line.retry_after_ms / 1000;
          if (line.status !== data.status) {
            location.reload();
            return;
          }
          const position = document.getElementById('line-position');
          const wait = document.getElementById('line-wait');
          const progress = document.getElementById('line-progress');
          if (position && line.text) position.textContent = line.text.position;
          if (wait && line.text) wait.textContent = line.text.wait;
          if (progress) {
            progress.value = line.progress;
            progress.textContent = `${line.progress}%`;
          }
        }
      } catch {
        // A failed poll is retried at the same pace; the place is kept for the grace period.
      } finally {
        inFlight = false;
      }
      schedule(retry);
    };
    document.addEventListener('visibilitychange', () => {
      if (document.hidden) clearTimeout(timer);
      else poll();
    });
    schedule(Number(data.retry) || 2);
  }

  if (data.refresh) setTimeout(() => location.reload(), Number(data.refresh) * 1000);

  // ---- Paying: the card goes to the provider, only its token comes here ----
  const form = document.getElementById('pay-form');
  if (form && data.provider) {
    const button = document.getElementById('pay-button');
    const status = document.getElementById('pay-status');
    let busy = false;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (busy) return;
      busy = true;
      button.disabled = true;
      button.textContent = button.dataset.paying;
      status.textContent = '';
      const [month, year] = document
        .getElementById('card-expiry')
        .value.split('/')
        .map((part) => Number(part.trim()));
      const card = {
        number: document.getElementById('card-number').value.replace(/\s+/g, ''),
        exp_month: month || 0,
        exp_year: 2000 + (year || 0),
        cvc: document.getElementById('card-cvc').value.trim(),
      };
      try {
        const response = await fetch(`${data.provider.replace(/\/+$/, '')}/v1/tokens`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ card }),
          credentials: 'omit',
        });
        const answer = await response.json();
        if (!response.ok) throw Object.assign(new Error(answer?.error?.message || ''), { invalid: response.status < 500 });
        form.elements.payment_method.value = answer.id;
        form.submit();
      } catch (error) {
        status.textContent = error.invalid ? form.dataset.invalid.replace('{reason}', error.message) : form.dataset.unavailable;
        busy = false;
        button.disabled = false;
        button.textContent = button.dataset.label || button.textContent;
      }
    });
    button.dataset.label = button.textContent;
  }
})();
