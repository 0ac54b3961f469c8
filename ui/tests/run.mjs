#!/usr/bin/env node
// The console in a real browser (Debian's chromium driven by playwright-core) against a real
// `segma start` with fake GPUs and engine-sim, in both languages. Run by ctest
// (tests/ui/CMakeLists.txt) as:
//   node ui/tests/run.mjs --segma build/test/src/cli/segma
// Options: --screenshots DIR also saves every page at 1440 and 390 px in both languages;
//          --keep leaves the server's data directory for inspection.
// Exit 0: every check passed; 77: skipped (no chromium, or ui/node_modules missing); 1: failed.
// Waits are on conditions (Playwright's auto-waiting, waitForFunction, polls with deadlines).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const SEGMA = opt('--segma');
const SHOTS = opt('--screenshots');
const CHROMIUM = process.env.SEGMA_CHROMIUM ?? '/usr/bin/chromium';
if (!SEGMA) {
  console.error('usage: run.mjs --segma PATH [--screenshots DIR]');
  process.exit(2);
}
if (!fs.existsSync(CHROMIUM)) {
  console.log(`SKIP: ${CHROMIUM} not found (scripts/bootstrap installs Debian's chromium)`);
  process.exit(77);
}
let chromium;
let AxeBuilder;
try {
  ({ chromium } = await import('playwright-core'));
  AxeBuilder = (await import('@axe-core/playwright')).default;
} catch (e) {
  console.log(`SKIP: ui/node_modules is not installed (scripts/build-ui installs it): ${e.message}`);
  process.exit(77);
}

// ---- the server -----------------------------------------------------------------------------

const freePort = () =>
  new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

async function poll(what, fn, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'segma-console-'));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const logFile = path.join(dataDir, 'server.log');
const log = fs.openSync(logFile, 'w');
const server = spawn(
  SEGMA,
  ['start', '--data-dir', path.join(dataDir, 'data'), '--address', '127.0.0.1', '--port', String(port),
    '--fake-gpus', '2xH100:80', '--heartbeat-interval', '0.2'],
  { stdio: ['ignore', log, log], env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SEGMA_BOOTSTRAP_PASSWORD')) },
);
let serverExited = false;
server.on('exit', () => (serverExited = true));

async function call(method, p, body, token) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  return { status: res.status, body: json };
}

let adminToken;
async function shutdown() {
  if (adminToken && !serverExited) {
    // Stop the engines (their own process groups) before the server goes.
    const models = await call('GET', '/v2/models?per_page=500', undefined, adminToken).catch(() => undefined);
    for (const m of models?.body?.items ?? []) await call('PATCH', `/v2/models/${m.id}`, { replicas: 0 }, adminToken).catch(() => {});
    await poll('instances to stop', async () => (await call('GET', '/v2/model-instances', undefined, adminToken)).body.pagination.total === 0, 30_000).catch(() => {});
  }
  if (!serverExited) server.kill('SIGKILL');
  if (!args.includes('--keep')) fs.rmSync(dataDir, { recursive: true, force: true });
  else console.log(`kept ${dataDir}`);
}

// ---- checks ---------------------------------------------------------------------------------

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
function formatBytes(locale, n) {
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const d = i === 0 ? 0 : 1;
  return `${new Intl.NumberFormat(locale, { minimumFractionDigits: d, maximumFractionDigits: d }).format(v)} ${UNITS[i]}`;
}

// What each language must show (a few strings from ui/src/i18n.tsx).
const TEXT = {
  en: { switch: 'English', dashboard: 'Dashboard', deployments: 'Deployments', revoked: 'Revoked', lockedOut: 'Too many failed sign-ins. Try again in 15 min.' },
  'zh-TW': { switch: '繁體中文', dashboard: '總覽', deployments: '模型部署', revoked: '已撤銷', lockedOut: '登入失敗次數過多，請於 15 分鐘後再試。' },
};

function check(cond, message) {
  if (!cond) throw new Error(message);
}

const T = 20_000; // default wait for one UI condition (ASan server, 2 shared cores)

async function signIn(page, lang, username, password, newPassword) {
  await page.goto(base + '/');
  await page.getByText(TEXT[lang].switch, { exact: true }).click();
  await page.waitForFunction((l) => document.documentElement.lang === l, lang);
  await page.locator('input[name=username]').fill(username);
  await page.locator('input[name=password]').fill(password);
  await page.locator('button[type=submit]').click();
  if (newPassword) {
    // The forced change: nothing else is reachable until the password is replaced.
    const fields = page.locator('input[autocomplete=new-password]');
    await fields.first().waitFor({ timeout: T });
    check((await page.locator('nav').count()) === 0, 'navigation shown before the forced password change');
    await page.locator('input[autocomplete=current-password]').fill(password);
    await fields.nth(0).fill(newPassword);
    await fields.nth(1).fill(newPassword);
    await page.locator('button[type=submit]').click();
  }
  await page.getByRole('link', { name: TEXT[lang].dashboard }).waitFor({ timeout: T });
  // The choice is remembered across reloads.
  await page.reload();
  await page.getByRole('link', { name: TEXT[lang].dashboard }).waitFor({ timeout: T });
  check((await page.evaluate(() => document.documentElement.lang)) === lang, 'language not remembered');
}

// Five failed sign-ins lock a name for 15 minutes; the form says so in the page's language
// (from the 429's Retry-After), not with the server's English message.
async function lockedOutSignIn(page, lang) {
  const name = `nobody-${lang.toLowerCase()}`;
  for (let i = 0; i < 5; i++) {
    const r = await call('POST', '/v2/auth/login', { username: name, password: 'wrong-password' });
    check(r.status === 401, `failed sign-in ${i + 1}: ${r.status}`);
  }
  await page.goto(base + '/');
  await page.getByText(TEXT[lang].switch, { exact: true }).click();
  await page.waitForFunction((l) => document.documentElement.lang === l, lang);
  await page.locator('input[name=username]').fill(name);
  await page.locator('input[name=password]').fill('wrong-password');
  await page.locator('button[type=submit]').click();
  const alert = page.getByTestId('login-error');
  await alert.waitFor({ timeout: T });
  const text = (await alert.textContent()).trim();
  check(text === TEXT[lang].lockedOut, `lockout message: ${text}`);
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `login-locked-${lang}.png`) });
}

async function dashboardShowsGpus(page, lang) {
  await page.goto(base + '/');
  const gpus = (await call('GET', '/v2/gpus', undefined, adminToken)).body.items;
  check(gpus.length === 2, `expected the 2 fake GPUs, /v2/gpus has ${gpus.length}`);
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid=gpu-card]').length === n, gpus.length, { timeout: T });
  for (const g of gpus) {
    const card = page.locator(`[data-gpu-id="${g.id}"]`);
    const total = card.locator('[data-testid=vram-total]');
    check(Number(await total.getAttribute('data-bytes')) === g.memory_total, `GPU ${g.id}: total differs`);
    const shown = await total.textContent();
    check(shown.includes(formatBytes(lang, g.memory_total)), `GPU ${g.id}: "${shown}" lacks ${formatBytes(lang, g.memory_total)}`);
    // Allocated VRAM follows the claims; the page re-reads /v2/gpus on worker events.
    await poll(`GPU ${g.id} allocated VRAM to match /v2/gpus`, async () => {
      const api = (await call('GET', '/v2/gpus', undefined, adminToken)).body.items.find((x) => x.id === g.id);
      const el = card.locator('[data-testid=vram-allocated]');
      return Number(await el.getAttribute('data-bytes')) === api.memory_allocated &&
        (await el.textContent()).includes(formatBytes(lang, api.memory_allocated));
    });
  }
  const allocated = gpus.reduce((a, g) => a + g.memory_allocated, 0);
  check(allocated > 0, 'the demo model claims no VRAM');
}

// The Workers page's GPU table: each GPU's enforced slices as /v2/gpus has them, in the row's
// two lines however many engines share the GPU.
async function workersShowSlices(page, lang) {
  await page.goto(base + '/workers');
  await page.getByTestId('gpus-table').waitFor({ timeout: T });
  const gpus = (await call('GET', '/v2/gpus', undefined, adminToken)).body.items;
  const sliced = gpus.filter((g) => (g.slices ?? []).length > 0);
  check(sliced.length > 0, 'no GPU has an enforced slice: the demo engines should have one each');
  for (const g of sliced) {
    const cell = page.locator(`[data-testid=gpus-table] [data-row-key="${g.id}"] [data-testid=slices]`);
    await poll(`GPU ${g.id}: ${g.slices.length} slice(s) shown as /v2/gpus has them`, async () => {
      const now = (await call('GET', '/v2/gpus', undefined, adminToken)).body.items.find((x) => x.id === g.id);
      const used = now.slices.reduce((a, s) => a + s.memory_used, 0);
      const limit = now.slices.reduce((a, s) => a + s.memory_limit, 0);
      if (Number(await cell.getAttribute('data-count')) !== now.slices.length) return false;
      if (Number(await cell.getAttribute('data-limit')) !== limit || Number(await cell.getAttribute('data-used')) !== used) return false;
      const text = await cell.textContent();
      const first = now.slices.length === 1 ? now.slices[0].instance_name : String(now.slices.length);
      return text.includes(first) && text.includes(formatBytes(lang, limit));
    });
    const [cellBox, rowBox] = await Promise.all([cell.boundingBox(), page.locator(`[data-testid=gpus-table] [data-row-key="${g.id}"]`).boundingBox()]);
    check(cellBox.height <= rowBox.height, `GPU ${g.id}: the slices (${cellBox.height} px) overflow their row (${rowBox.height} px)`);
  }
}

async function openDeployForm(page) {
  await page.goto(base + '/deployments');
  await page.getByTestId('deploy-new').click();
  await page.getByTestId('deploy-name').waitFor();
}

async function badInputShowsServerMessage(page) {
  await openDeployForm(page);
  await page.getByTestId('deploy-check').click();
  const name = page.getByTestId('deploy-name');
  await page.waitForFunction(() => document.querySelector('[data-testid=deploy-name]')?.getAttribute('aria-invalid') === 'true', null, { timeout: T });
  const errorId = (await name.getAttribute('aria-describedby')) ?? '';
  const message = await page.locator(`[id="${errorId.split(' ').find((s) => s.endsWith('error')) ?? errorId}"]`).textContent();
  check(/name/.test(message), `the field shows "${message}", not the server's message about name`);
  // Negative params: the server's message lands next to that field.
  await name.fill('bad-params');
  await page.getByTestId('deploy-params').fill('-3');
  await page.getByTestId('deploy-check').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=deploy-params]')?.getAttribute('aria-invalid') === 'true', null, { timeout: T });
  await page.keyboard.press('Escape');
  const models = (await call('GET', '/v2/models?q=bad-params', undefined, adminToken)).body;
  check(models.pagination.total === 0, 'a model was created from bad input');
}

async function deployThroughTheForm(page, lang) {
  const name = `web-${lang.toLowerCase()}`;
  await openDeployForm(page);
  await page.getByTestId('deploy-name').fill(name);
  await page.getByTestId('deploy-params').fill('1');
  check(await page.getByTestId('deploy-create').isDisabled(), 'Create is enabled before Check');
  await page.getByTestId('deploy-check').click();
  await page.locator('[data-testid=evaluation][data-fits=true]').waitFor({ timeout: T });
  check((await page.getByTestId('claim-row').count()) >= 1, 'the check shows no claim per GPU');
  check(((await page.getByTestId('placement').textContent()) ?? '').length > 0, 'no placement shown');
  // The engine segma chose (a simulated source runs on the simulator) and the concurrency the
  // claim covers, in the page's language.
  check((await page.getByTestId('evaluation-engine').getAttribute('data-backend')) === 'simulator', 'the check shows no engine choice');
  const sequences = Number(await page.getByTestId('evaluation-serves').getAttribute('data-sequences'));
  check(sequences >= 1, 'the check shows no concurrency');
  const serves = (await page.getByTestId('evaluation-serves').textContent()) ?? '';
  check(serves.includes(lang === 'en' ? 'concurrent sequences' : '個序列'), `the concurrency line is not in ${lang}: ${serves}`);
  // segma has no GPU measurements of the simulator: the check says so instead of guessing.
  const perf = page.getByTestId('evaluation-performance');
  check((await perf.getAttribute('data-available')) === 'false', 'the check predicts a simulator it never measured');
  const perfText = (await perf.textContent()) ?? '';
  check(perfText.includes(lang === 'en' ? 'No performance prediction: no measurements of simulator yet' : '無效能預估'), `the prediction line is not in ${lang}: ${perfText}`);
  await page.getByTestId('deploy-create').click();
  await page.waitForURL(/\/deployments\/\d+$/, { timeout: T });
  const running = (n) =>
    page.waitForFunction((k) => document.querySelectorAll('[data-testid=instances-table] [data-state=RUNNING]').length === k, n, { timeout: 120_000 });
  await running(1); // live from the watch stream: no reload
  await page.getByTestId('scale-input').fill('2');
  await page.getByTestId('scale-apply').click();
  await running(2);
  await page.waitForFunction(() => document.querySelector('[data-testid=ready-replicas]')?.textContent?.trim() === '2 / 2', null, { timeout: T });
  // The first instance's log.
  await page.locator('[data-testid=instances-table] [role=row] button').first().click();
  const logView = page.getByTestId('log-view');
  await logView.waitFor();
  await page.locator('[data-testid=log-view][data-has-log=true]').waitFor({ timeout: T });
  await page.keyboard.press('Escape');
  return name;
}

async function impossibleModel(page, lang) {
  const name = `huge-${lang.toLowerCase()}`;
  await openDeployForm(page);
  await page.getByTestId('deploy-name').fill(name);
  await page.getByTestId('deploy-params').fill('5000');
  await page.getByTestId('deploy-check').click();
  await page.locator('[data-testid=evaluation][data-fits=false]').waitFor({ timeout: T });
  const workers = (await call('GET', '/v2/workers', undefined, adminToken)).body.items;
  const reasons = page.locator('[data-testid=reasons] li');
  check((await reasons.count()) === workers.length, `expected a reason for each of ${workers.length} workers`);
  for (const w of workers) check((await page.locator(`[data-testid=reasons] li[data-worker="${w.name}"]`).count()) === 1, `no reason for worker ${w.name}`);
  check(await page.getByTestId('deploy-create').isDisabled(), 'Create is enabled for a model that does not fit');
  await page.keyboard.press('Escape');
  const models = (await call('GET', `/v2/models?q=${name}`, undefined, adminToken)).body;
  check(models.pagination.total === 0, 'the impossible model was created');
}

async function playgroundStreams(page) {
  await page.goto(base + '/playground');
  await page.waitForFunction(() => !!document.querySelector('[data-testid=play-model]')?.value, null, { timeout: T });
  await page.getByTestId('play-prompt').fill('Tell me about GPUs.');
  // Record every length the answer passes through: a streamed answer grows in steps.
  await page.evaluate(() => {
    window.__lengths = new Set();
    new MutationObserver(() => {
      const el = document.querySelector('[data-testid=answer-text]');
      if (el) window.__lengths.add(el.textContent.length);
    }).observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  await page.getByTestId('play-send').click();
  await page.locator('[data-testid=answer][data-done=true]').waitFor({ timeout: 60_000 });
  const steps = await page.evaluate(() => [...window.__lengths].filter((n) => n > 0).length);
  check(steps >= 3, `the answer arrived in ${steps} steps, not streamed token by token`);
  await page.getByTestId('ttft').waitFor();
  await page.getByTestId('tps').waitFor();
}

async function keysCreateUseRevoke(page, lang) {
  await page.goto(base + '/api-keys');
  await page.getByTestId('key-new').click();
  await page.getByTestId('key-name').fill(`key-${lang.toLowerCase()}`);
  // Allowed client ranges: the server's message at the field, then ranges this test's host is in.
  await page.getByTestId('key-cidrs').fill('10.1.2.3/8');
  await page.getByTestId('key-create').click();
  await page.getByText(/did you mean 10\.0\.0\.0\/8/).waitFor({ timeout: T });
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `key-cidrs-error-${lang}.png`) });
  await page.getByTestId('key-cidrs').fill('127.0.0.1/32, ::1');
  await page.getByTestId('key-create').click();
  const secretEl = page.getByTestId('key-secret');
  await secretEl.waitFor({ timeout: T });
  const secret = (await secretEl.textContent()).trim();
  check(secret.startsWith('sk-segma-'), `secret looks wrong: ${secret}`);
  await page.getByTestId('key-secret-close').click();
  check(!(await page.content()).includes(secret), 'the secret is still on the page after closing');
  await page.reload();
  await page.getByTestId('keys-table').waitFor();
  check(!(await page.content()).includes(secret), 'the secret is shown again');
  // Use it like any OpenAI client would (the gateway learns of a new key within a second).
  await poll('the new key to chat', async () => {
    const chat = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${secret}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'demo-chat', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }),
    });
    return chat.status === 200;
  }, 10_000);
  const keys = (await call('GET', '/v2/api-keys?per_page=500', undefined, adminToken)).body.items;
  const key = keys.find((k) => secret.startsWith(k.prefix) && k.name === `key-${lang.toLowerCase()}`);
  check(key, 'the key is not listed');
  check(JSON.stringify(key.allowed_cidrs) === '["127.0.0.1/32","::1/128"]', `allowed_cidrs: ${JSON.stringify(key.allowed_cidrs)}`);
  await page.locator(`[data-row-key="${key.id}"]`).getByText('127.0.0.1/32, ::1/128').waitFor({ timeout: T });
  // Its tokens on the usage page, grouped by key (the meter writes in batches).
  await poll('the key on the usage page', async () => {
    await page.goto(`${base}/usage`);
    await page.getByTestId('usage-group').click();
    // "Key": the fifth grouping (GROUPS in ui/src/pages/Usage.tsx).
    await page.getByRole('option').nth(4).click();
    return (await page.locator(`[data-testid=usage-table] tr[data-key="${key.id}"]`).count()) === 1;
  }, 60_000);
  await page.goto(base + '/api-keys');
  await page.locator(`[data-row-key="${key.id}"] [data-testid=key-revoke]`).click();
  await page.locator(`[data-row-key="${key.id}"] [data-state="${TEXT[lang].revoked}"]`).waitFor({ timeout: T });
  await poll('the revoked key to be refused', async () =>
    (await fetch(`${base}/v1/models`, { headers: { Authorization: `Bearer ${secret}` } })).status === 401, 10_000);
}

async function viewerSeesNoControls(page, lang) {
  const username = `viewer-${lang.toLowerCase()}`;
  const u = await call('POST', '/v2/users', { username, password: 'viewer-password-1' }, adminToken);
  check(u.status === 201, JSON.stringify(u.body));
  const m = await call('POST', '/v2/projects/1/members', { username, role: 'viewer' }, adminToken);
  check(m.status === 201 || m.status === 200, JSON.stringify(m.body));
  await page.getByTestId('user-menu').click();
  await page.getByTestId('sign-out').click();
  await page.locator('input[name=username]').waitFor();
  await signIn(page, lang, username, 'viewer-password-1');
  await page.goto(base + '/deployments');
  await page.locator('[data-testid=deployments-table] [role=row] a').first().waitFor({ timeout: T });
  check((await page.getByTestId('deploy-new').count()) === 0, 'a viewer sees "New deployment"');
  await page.locator('[data-testid=deployments-table] [role=row] a').first().click();
  await page.getByTestId('ready-replicas').waitFor();
  check((await page.getByTestId('deploy-delete').count()) === 0, 'a viewer sees Delete');
  check((await page.getByTestId('scale-input').count()) === 0, 'a viewer sees Scale');
  await page.goto(base + '/api-keys');
  await page.getByTestId('keys-table').waitFor();
  check((await page.getByTestId('key-new').count()) === 0, 'a viewer sees "New key"');
  // The server still refuses what the UI hides, with the CSRF header and without it.
  const statuses = await page.evaluate(async () => {
    const csrf = /(?:^|;\s*)segma_csrf=([^;]*)/.exec(document.cookie)?.[1] ?? '';
    const body = JSON.stringify({ name: 'forced', project_id: 1, source: { type: 'simulated', params_b: 1 } });
    const withHeader = await fetch('/v2/models', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf }, body });
    const withoutHeader = await fetch('/v2/models', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    return [withHeader.status, withoutHeader.status];
  });
  check(statuses[0] === 403 && statuses[1] === 403, `a viewer's forced create answered ${statuses}`);
  await page.getByTestId('user-menu').click();
  await page.getByTestId('sign-out').click();
  await page.locator('input[name=username]').waitFor();
}

async function accessibility(page, where) {
  const result = await new AxeBuilder({ page }).analyze();
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, `axe on ${where}: ${bad.map((v) => `${v.id} (${v.nodes.length}): ${v.help}`).join('; ')}`);
}

const PAGES = ['/', '/workers', '/deployments', '/deployments/1', '/playground', '/api-keys', '/usage', '/routes', '/model-files', '/backends', '/projects', '/users', '/account/password'];

async function screenshots(browser, lang, username, password) {
  fs.mkdirSync(SHOTS, { recursive: true });
  for (const width of [1440, 390]) {
    const ctx = await browser.newContext({ viewport: { width, height: width > 1000 ? 900 : 844 }, locale: lang });
    const page = await ctx.newPage();
    await page.goto(base + '/');
    await page.evaluate((l) => localStorage.setItem('segma.locale', l), lang);
    await page.reload();
    await page.locator('input[name=username]').waitFor();
    await page.screenshot({ path: path.join(SHOTS, `login-${lang}-${width}.png`) });
    await page.locator('input[name=username]').fill(username);
    await page.locator('input[name=password]').fill(password);
    await page.locator('button[type=submit]').click();
    await page.locator('nav').waitFor();
    // The create form after a Check.
    await page.goto(base + '/deployments');
    await page.getByTestId('deploy-new').click();
    await page.getByTestId('deploy-name').fill('qwen-7b');
    await page.getByTestId('deploy-params').fill('7');
    await page.getByTestId('deploy-check').click();
    await page.getByTestId('evaluation').waitFor({ timeout: T });
    await page.screenshot({ path: path.join(SHOTS, `deploy-check-${lang}-${width}.png`) });
    for (const p of PAGES) {
      await page.goto(base + p);
      await page.locator('main h1').first().waitFor({ timeout: T }).catch(() => {});
      await page.waitForLoadState('networkidle').catch(() => {});
      const name = p === '/' ? 'dashboard' : p.slice(1).replace(/\//g, '-');
      await page.screenshot({ path: path.join(SHOTS, `${name}-${lang}-${width}.png`), fullPage: width > 1000 });
    }
    await ctx.close();
  }
}

// ---- main -----------------------------------------------------------------------------------

let failed = false;
let browser;
try {
  await poll('segma to serve', async () => (await fetch(`${base}/healthz`)).ok, 60_000);
  const index = await fetch(base + '/');
  check(index.status === 200 && (index.headers.get('content-type') ?? '').startsWith('text/html'),
    'segma serves no console at / (built without node?)');
  check(index.headers.get('cache-control') === 'no-cache', 'index.html must be no-cache');
  const asset = /src="(\/assets\/[^"]+\.js)"/.exec(await index.text())?.[1];
  check(asset, 'no script in index.html');
  check((await fetch(base + asset)).headers.get('cache-control') === 'public, max-age=31536000, immutable', 'hashed assets must be immutable');
  check((await fetch(base + '/deployments/7')).headers.get('content-type').startsWith('text/html'), 'no SPA fallback');
  const v2 = await fetch(base + '/v2/nothing-here');
  check(v2.status === 404 && (await v2.json()).error.code === 'not_found', '/v2 404 shadowed by the console');

  const bootstrap = fs.readFileSync(path.join(dataDir, 'data', 'initial_admin_password'), 'utf8').trim();
  const ADMIN_PW = 'console-admin-password-1';
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const steps = [];
  const run = async (page, name, fn) => {
    const t0 = Date.now();
    try {
      await fn();
      steps.push(name);
      console.log(`ok - ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      const shot = path.join(os.tmpdir(), `segma-console-failure-${process.pid}.png`);
      await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
      throw new Error(`${name}: ${e.message}\n  page: ${page.url()}\n  screenshot: ${shot}`);
    }
  };
  for (const [lang, user] of [['en', 'admin'], ['zh-TW', 'ops']]) {
    const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await ctx.newPage();
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && !/status of (4\d\d)/.test(m.text()) && pageErrors.push(m.text()));
    await run(page, `[${lang}] a locked-out sign-in says when`, () => lockedOutSignIn(page, lang));
    if (user === 'admin') {
      // First run: the printed bootstrap password, then the forced change.
      await run(page, `[${lang}] sign in with the bootstrap password and change it`, () => signIn(page, lang, 'admin', bootstrap, ADMIN_PW));
      const login = await call('POST', '/v2/auth/login', { username: 'admin', password: ADMIN_PW });
      check(login.status === 200, 'the new admin password does not work');
      adminToken = login.body.token;
      await poll('the demo model to run', async () => (await call('GET', '/v2/model-instances?state=RUNNING', undefined, adminToken)).body.pagination.total >= 1, 180_000);
    } else {
      const u = await call('POST', '/v2/users', { username: user, password: 'ops-first-password', is_admin: true, require_password_change: true }, adminToken);
      check(u.status === 201, JSON.stringify(u.body));
      await run(page, `[${lang}] sign in and change the password an admin set`, () => signIn(page, lang, user, 'ops-first-password', 'ops-second-password'));
    }
    await run(page, `[${lang}] dashboard shows /v2/gpus VRAM`, () => dashboardShowsGpus(page, lang));
    await run(page, `[${lang}] bad input shows the server's message at the field`, () => badInputShowsServerMessage(page));
    await run(page, `[${lang}] deploy: Check, create, RUNNING live, scale to 2, log`, () => deployThroughTheForm(page, lang));
    await run(page, `[${lang}] impossible model: every worker's reason, nothing created`, () => impossibleModel(page, lang));
    await run(page, `[${lang}] playground streams an answer`, () => playgroundStreams(page));
    await run(page, `[${lang}] API key: secret once, used, on the usage page, revoked`, () => keysCreateUseRevoke(page, lang));
    await run(page, `[${lang}] workers page shows the enforced slices of /v2/gpus`, () => workersShowSlices(page, lang));
    if (lang === 'en') {
      await run(page, `[${lang}] no serious or critical axe violations`, async () => {
        for (const p of ['/', '/workers', '/deployments', '/api-keys', '/playground', '/usage']) {
          await page.goto(base + p);
          await page.locator('main h1').first().waitFor({ timeout: T });
          await page.waitForLoadState('networkidle');
          await accessibility(page, p);
        }
      });
    }
    await run(page, `[${lang}] a viewer sees no create/edit/delete and gets 403`, () => viewerSeesNoControls(page, lang));
    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join(' | ')}`);
    await ctx.close();
    if (SHOTS) await screenshots(browser, lang, 'admin', ADMIN_PW);
  }
  console.log(`all ${steps.length} checks passed`);
} catch (e) {
  failed = true;
  console.error(`FAIL: ${e.stack ?? e}`);
  console.error(`--- server log (last 40 lines of ${logFile}) ---`);
  console.error(fs.readFileSync(logFile, 'utf8').split('\n').slice(-40).join('\n'));
} finally {
  await browser?.close().catch(() => {});
  await shutdown();
}
process.exit(failed ? 1 : 0);
