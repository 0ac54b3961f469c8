#!/usr/bin/env node
// The console's two performance bars (issue 15): the initial JavaScript (gzip) and the dashboard's
// time to interactive on loopback, measured with the browser's own performance timing.
//   node bench/ui/run.mjs                      # bundle size of ui/dist only
//   node bench/ui/run.mjs --url http://127.0.0.1:8080 --user admin --password PW [--runs 10] [--waterfall]
//       [--compare http://127.0.0.1:8081]   # a second server (same user), loads alternating A, B
// Time to interactive here: from navigation start to the moment the dashboard shows every GPU
// card (data loaded and rendered), measured in the page with performance.now(); also reported:
// domInteractive and the first contentful paint. Each run is a fresh page with a warm HTTP cache
// (as a returning user), after one cold run that is reported separately.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../ui');
const args = process.argv.slice(2);
const opt = (n, d) => (args.includes(n) ? args[args.indexOf(n) + 1] : d);

// Initial JS: the entry script and the chunks index.html preloads.
const dist = path.join(root, 'dist');
const html = fs.readFileSync(path.join(dist, 'index.html'), 'utf8');
const initial = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+\.js)"/g)].map((m) => m[1]);
let gz = 0;
let raw = 0;
for (const f of initial) {
  const b = fs.readFileSync(path.join(dist, f));
  raw += b.length;
  gz += zlib.gzipSync(b, { level: 9 }).length;
}
const all = fs.readdirSync(path.join(dist, 'assets')).filter((f) => f.endsWith('.js'));
const allGz = all.reduce((a, f) => a + zlib.gzipSync(fs.readFileSync(path.join(dist, 'assets', f)), { level: 9 }).length, 0);
console.log(`initial JS: ${initial.length} files, ${(raw / 1024).toFixed(1)} KiB raw, ${(gz / 1024).toFixed(1)} KiB gzip (bar: 250 KB)`);
console.log(`all JS: ${all.length} files, ${(allGz / 1024).toFixed(1)} KiB gzip`);
if (gz > 250 * 1000) process.exitCode = 1;

const url = opt('--url');
if (url) {
  const require = createRequire(path.join(root, 'package.json'));
  const { chromium } = require('playwright-core');
  const runs = Number(opt('--runs', '10'));
  const browser = await chromium.launch({ executablePath: process.env.SEGMA_CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
  // One signed-in browser context per server; with --compare the loads alternate between the two
  // (A, B, A, B, ...), so that a shared machine's changing load falls on both alike.
  const servers = [url, opt('--compare')].filter(Boolean);
  const contexts = [];
  for (const u of servers) {
    const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await ctx.newPage();
    await page.goto(u + '/');
    await page.locator('nav, input[name=username]').first().waitFor();
    if ((await page.locator('input[name=username]').count()) > 0) {
      await page.locator('input[name=username]').fill(opt('--user', 'admin'));
      await page.locator('input[name=password]').fill(opt('--password', ''));
      await page.locator('button[type=submit]').click();
      await page.locator('nav').waitFor();
    }
    contexts.push(ctx);
  }
  const measure = async (ctx, u) => {
    const p = await ctx.newPage();
    await p.goto(u + '/');
    await p.waitForFunction(() => document.querySelectorAll('[data-testid=gpu-card]').length > 0, null, { timeout: 30_000 });
    const t = await p.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const fcp = performance.getEntriesByName('first-contentful-paint')[0];
      const res = performance.getEntriesByType('resource').map((r) => ({
        name: r.name.replace(location.origin, ''), start: r.startTime, end: r.responseEnd,
      }));
      return { ready: performance.now(), domInteractive: nav.domInteractive, fcp: fcp?.startTime ?? NaN, res };
    });
    await p.close();
    return t;
  };
  const colds = [];
  for (let s = 0; s < servers.length; s++) colds.push(await measure(contexts[s], servers[s]));
  const times = servers.map(() => []);
  for (let i = 0; i < runs; i++) for (let s = 0; s < servers.length; s++) times[s].push(await measure(contexts[s], servers[s]));
  for (let s = 0; s < servers.length; s++) {
    const ts = times[s];
    const med = (k) => {
      const v = ts.map((t) => t[k]).sort((a, b) => a - b);
      return v[Math.floor(v.length / 2)];
    };
    const max = (k) => Math.max(...ts.map((t) => t[k]));
    const who = servers.length > 1 ? `${servers[s]}: ` : '';
    console.log(`${who}dashboard, first load: GPUs shown at ${colds[s].ready.toFixed(0)} ms (domInteractive ${colds[s].domInteractive.toFixed(0)} ms)`);
    console.log(`${who}dashboard, ${runs} loads: GPUs shown median ${med('ready').toFixed(0)} ms, max ${max('ready').toFixed(0)} ms; ` +
      `domInteractive median ${med('domInteractive').toFixed(0)} ms; first contentful paint median ${med('fcp').toFixed(0)} ms (bar: < 1000 ms)`);
    if (args.includes('--waterfall')) {
      // The requests of the median load, in the order they started (ms from navigation start).
      const m = [...ts].sort((a, b) => a.ready - b.ready)[Math.floor(ts.length / 2)];
      for (const r of m.res) console.log(`  ${r.start.toFixed(0).padStart(5)} → ${r.end.toFixed(0).padStart(5)}  ${r.name}`);
      console.log(`  ${m.ready.toFixed(0).padStart(5)}    GPUs shown`);
    }
    if (s === 0 && med('ready') >= 1000) process.exitCode = 1;
  }
  await browser.close();
}
