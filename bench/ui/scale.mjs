#!/usr/bin/env node
// The console at scale (issue 15): a GPU list of 10,000 rows and an instance list of 10,000 rows
// scroll without dropped frames, and the watch streams applying 100 updates/s do not freeze the
// page. Runs ui/tests/mock-server.mjs with simulated workers (ui/dist must be built) and Debian's
// chromium:
//   node bench/ui/scale.mjs [--gpus 10000] [--instances 10000] [--rate 100] [--seconds 10]
// For each list (Workers → GPUs, a deployment → its instances): the time until its first rows
// show, then a scroll from top to bottom in 300 animation frames (scrollTop set in
// requestAnimationFrame, as a fast wheel would), sampling every frame's interval, long tasks
// (PerformanceObserver 'longtask') and the main thread's lateness (a 50 ms timer chain: how long
// an input event would wait). Then the same page under `rate` watch events a second for
// `seconds`, scrolling slowly and opening or closing the user menu once a second, with the
// clicks' own latency from the Event Timing API (input delay + handlers + the next paint).
// Exit 1 if a check fails: the last row not reachable, a list not virtualised (more than 200 rows
// in the DOM), an update not shown, or the page frozen (the main thread late by over 250 ms).
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const args = process.argv.slice(2);
const opt = (n, d) => (args.includes(n) ? Number(args[args.indexOf(n) + 1]) : d);
const GPUS = opt('--gpus', 10_000);
const INSTANCES = opt('--instances', 10_000);
const RATE = opt('--rate', 100);
const SECONDS = opt('--seconds', 10);
const require = createRequire(path.join(root, 'ui/package.json'));
const { chromium } = require('playwright-core');

const port = await new Promise((resolve, reject) => {
  const s = net.createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const { port: p } = s.address();
    s.close(() => resolve(p));
  });
});
const base = `http://127.0.0.1:${port}`;
const mock = spawn(process.execPath, [path.join(root, 'ui/tests/mock-server.mjs'), String(port), '--gpus', String(GPUS), '--instances', String(INSTANCES)], { stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise((resolve, reject) => {
  mock.stdout.on('data', (d) => d.toString().includes('mock segma on') && resolve());
  mock.once('exit', (c) => reject(new Error(`mock server exited (${c})`)));
});

let failed = false;
function check(cond, message) {
  if (!cond) {
    failed = true;
    console.log(`FAIL: ${message}`);
  }
}

// Installed in the page: frame intervals, long tasks, main-thread lateness, click latencies.
function sampler() {
  const S = { frames: [], longtasks: [], late: [], clicks: [], on: true };
  let last = performance.now();
  const frame = (t) => {
    S.frames.push(t - last);
    last = t;
    if (S.on) requestAnimationFrame(frame);
  };
  requestAnimationFrame((t) => {
    last = t;
    requestAnimationFrame(frame);
  });
  const lt = new PerformanceObserver((l) => S.longtasks.push(...l.getEntries().map((e) => e.duration)));
  lt.observe({ type: 'longtask' });
  const ev = new PerformanceObserver((l) => S.clicks.push(...l.getEntries().filter((e) => e.name === 'click').map((e) => e.duration)));
  ev.observe({ type: 'event', durationThreshold: 16, buffered: false });
  const tick = () => {
    const due = performance.now() + 50;
    setTimeout(() => {
      S.late.push(Math.max(0, performance.now() - due));
      if (S.on) tick();
    }, 50);
  };
  tick();
  S.stop = () => {
    S.on = false;
    lt.disconnect();
    ev.disconnect();
  };
  window.__sampler = S;
}

async function stop(page) {
  // The last event entries arrive after their frame; one more frame flushes them.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  return page.evaluate(() => {
    const S = window.__sampler;
    S.stop();
    return { frames: S.frames, longtasks: S.longtasks, late: S.late, clicks: S.clicks };
  });
}

const pct = (v, p) => {
  if (v.length === 0) return 0;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
function report(what, s) {
  const over16 = s.frames.filter((f) => f > 1000 / 60 + 1).length; // a frame took longer than one 60 Hz vsync
  const over33 = s.frames.filter((f) => f > 2000 / 60 + 1).length;
  const line =
    `${what}: ${s.frames.length} frames, ${over16} over 16.7 ms, ${over33} over 33 ms, frame p50 ${pct(s.frames, 50).toFixed(1)} / p95 ${pct(s.frames, 95).toFixed(1)} / max ${Math.max(...s.frames).toFixed(0)} ms; ` +
    `long tasks ${s.longtasks.length} (longest ${Math.max(0, ...s.longtasks).toFixed(0)} ms); main thread late p95 ${pct(s.late, 95).toFixed(0)} / max ${Math.max(0, ...s.late).toFixed(0)} ms` +
    (s.clicks.length || s.clicksSent ? `; clicks ${s.clicksSent}, slower than 16 ms ${s.clicks.length}, max ${Math.max(0, ...s.clicks).toFixed(0)} ms` : '');
  console.log(line);
  check(Math.max(0, ...s.late) <= 250, `${what}: the page froze (main thread ${Math.max(...s.late).toFixed(0)} ms late)`);
}

// Scrolls the list's body from top to bottom in `frames` animation frames.
async function scrollThrough(page, testId, frames) {
  await page.evaluate(sampler);
  await page.evaluate(
    ({ testId, frames }) =>
      new Promise((resolve) => {
        const el = document.querySelector(`[data-testid=${testId}] [role=rowgroup][style*=overflow]`);
        const max = el.scrollHeight - el.clientHeight;
        let k = 0;
        const step = () => {
          el.scrollTop = (max * ++k) / frames;
          if (k < frames) requestAnimationFrame(step);
          else requestAnimationFrame(() => resolve());
        };
        requestAnimationFrame(step);
      }),
    { testId, frames },
  );
  return stop(page);
}

async function list(page, route, testId, rows) {
  const t0 = Date.now();
  await page.goto(base + route);
  await page.locator(`[data-testid=${testId}] [role=row][data-row-key]`).first().waitFor({ timeout: 60_000 });
  const shown = await page.evaluate(() => performance.now());
  const count = await page.locator(`[data-testid=${testId}] [role=table]`).getAttribute('aria-rowcount');
  check(Number(count) === rows + 1, `${route}: the table has ${Number(count) - 1} rows, expected ${rows}`);
  const s = await scrollThrough(page, testId, 300);
  const inDom = await page.locator(`[data-testid=${testId}] [role=row][data-row-key]`).count();
  const lastShown = await page.locator(`[data-testid=${testId}] [role=row][aria-rowindex="${rows + 1}"]`).count();
  check(lastShown === 1, `${route}: the last row is not shown after scrolling to the end`);
  check(inDom <= 200, `${route}: ${inDom} rows in the DOM (not virtualised)`);
  console.log(`${route}: ${rows} rows shown ${shown.toFixed(0)} ms after navigation start (${Date.now() - t0} ms wall); ${inDom} rows in the DOM`);
  report(`${route}: scroll top to bottom`, s);
}

async function underUpdates(page, route, testId) {
  await page.goto(base + route);
  await page.locator(`[data-testid=${testId}] [role=row][data-row-key]`).first().waitFor({ timeout: 60_000 });
  await page.evaluate(sampler);
  const sent = fetch(`${base}/mock/updates`, { method: 'POST', body: JSON.stringify({ rate: RATE, seconds: SECONDS }) }).then((r) => r.json());
  // Slow scrolling all along (8 px a frame), and a click on the user menu every second.
  await page.evaluate((testId) => {
    const el = document.querySelector(`[data-testid=${testId}] [role=rowgroup][style*=overflow]`);
    const step = () => {
      el.scrollTop += 8;
      if (window.__sampler.on) requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }, testId);
  let clicks = 0;
  const deadline = Date.now() + SECONDS * 1000;
  while (Date.now() < deadline) {
    await page.getByTestId('user-menu').click();
    clicks++;
    await page.waitForTimeout(1000); // paces the clicks; the measurement is the page's own
  }
  const { sent: n } = await sent;
  const s = await stop(page);
  s.clicksSent = clicks;
  report(`${route}: ${n} watch events in ${SECONDS} s (${RATE}/s) while scrolling and clicking`, s);
  return n;
}

const browser = await chromium.launch({ executablePath: process.env.SEGMA_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  await page.goto(base + '/');
  await page.locator('input[name=username]').fill('admin');
  await page.locator('input[name=password]').fill('admin');
  await page.locator('button[type=submit]').click();
  await page.locator('nav').waitFor();
  await page.getByText('English', { exact: true }).click();

  // The dashboard with 10,000 GPUs: the first GPU card.
  await page.goto(base + '/');
  await page.locator('[data-testid=gpu-card]').first().waitFor({ timeout: 60_000 });
  const dash = await page.evaluate(() => ({ at: performance.now(), cards: document.querySelectorAll('[data-testid=gpu-card]').length }));
  console.log(`dashboard with ${GPUS + 4} GPUs: first cards shown at ${dash.at.toFixed(0)} ms, ${dash.cards} cards in the DOM`);
  check(dash.cards <= 200, `dashboard: ${dash.cards} GPU cards in the DOM (not virtualised)`);

  await list(page, '/workers', 'gpus-table', GPUS + 4);
  await list(page, '/deployments/1', 'instances-table', INSTANCES + 1);

  await underUpdates(page, '/deployments/1', 'instances-table');
  // Every change reached the page: each instance row shows the restart count the server has.
  const shownRows = await page.locator('[data-testid=instances-table] [role=row][data-row-key]').evaluateAll((rows) =>
    rows.map((r) => ({ id: r.getAttribute('data-row-key'), cells: [...r.querySelectorAll('[role=cell]')].map((c) => c.textContent) })),
  );
  let compared = 0;
  for (const r of shownRows) {
    const inst = await (await fetch(`${base}/v2/model-instances/${r.id}`)).json();
    if (inst.restart_count === undefined) continue;
    compared++;
    check(r.cells[6] === String(inst.restart_count), `instance ${r.id}: shows ${r.cells[6]} restarts, the server has ${inst.restart_count}`);
  }
  check(compared > 0, 'no instance row compared with the server');
  await underUpdates(page, '/workers', 'gpus-table');
} finally {
  await browser.close();
  mock.kill();
}
if (failed) process.exitCode = 1;
