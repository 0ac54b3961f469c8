#!/usr/bin/env node
// A stand-in for segma's API with fixed data, serving ui/dist: for working on the console's
// layout without building segma (the browser test always runs against the real server), and for
// the console's scale benchmark (bench/ui/scale.mjs).
//   node ui/tests/mock-server.mjs [port]     # then open http://127.0.0.1:PORT (admin / admin)
//   node ui/tests/mock-server.mjs [port] --gpus 10000 --instances 10000
//       adds simulated workers of 8 GPUs each up to that many GPUs, and that many instances of
//       the model "demo-chat" (id 1) spread over them. Lists are paged as segma pages them
//       (per_page at most 500). POST /mock/updates {"rate":100,"seconds":10} then pushes `rate`
//       watch events a second for `seconds` (half worker heartbeats, half instance changes) to
//       every open watch stream, and answers when they are sent with {"sent":N}.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// SEGMA_UI_DIST: another build to serve (bench/ui/scale.mjs compares two builds in one session).
const dist = process.env.SEGMA_UI_DIST ? path.resolve(process.env.SEGMA_UI_DIST) : path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist');
const argv = process.argv.slice(2);
const port = Number(argv[0] && !argv[0].startsWith('--') ? argv[0] : 8089);
const flag = (n, d) => (argv.includes(n) ? Number(argv[argv.indexOf(n) + 1]) : d);
const SCALE_GPUS = flag('--gpus', 0);
const SCALE_INSTANCES = flag('--instances', 0);
const GiB = 1024 ** 3;
const now = new Date().toISOString();
const ago = (s) => new Date(Date.now() - s * 1000).toISOString();

const gpu = (worker, index, name, total, used, allocated, ext, util, temp, power) => ({
  index, uuid: `GPU-fake-${worker.id}-${index}`, name, vendor: 'nvidia', memory_total: total * GiB,
  memory_used: used * GiB, memory_used_external: ext * GiB, utilization: util, temperature: temp,
  power, power_limit: 600, simulated: true, processes: [],
  id: `${worker.name}:${index}`, worker_id: worker.id, worker_name: worker.name, memory_allocated: allocated * GiB,
});
const w1 = { id: 1, name: 'gpu-node-1', state: 'READY', address: '10.0.0.11', port: 10150, labels: { rack: 'a1', tier: 'prod' }, last_heartbeat_at: ago(2) };
const w2 = { id: 2, name: 'gpu-node-2', state: 'READY', address: '10.0.0.12', port: 10150, labels: { rack: 'a2' }, last_heartbeat_at: ago(1) };
const w3 = { id: 3, name: 'gpu-node-3', state: 'MAINTENANCE', address: '10.0.0.13', port: 10150, labels: {}, last_heartbeat_at: ago(40) };
const gpus = [
  gpu(w1, 0, 'NVIDIA H200 NVL', 141, 96, 88, 4, 71, 64, 412),
  gpu(w1, 1, 'NVIDIA H200 NVL', 141, 42, 40, 0, 35, 51, 260),
  gpu(w2, 0, 'NVIDIA RTX PRO 6000', 96, 20, 12, 6, 12, 43, 120),
  gpu(w3, 0, 'NVIDIA H200 NVL', 141, 0, 0, 0, 0, 33, 80),
];
const baseWorkers = [w1, w2, w3];
// Simulated workers for the scale benchmark: 8 GPUs each, ids from 100.
for (let id = 100; gpus.length < 4 + SCALE_GPUS; id++) {
  const w = { id, name: `sim-node-${id}`, state: 'READY', address: `10.1.${(id >> 8) & 255}.${id & 255}`, port: 10150, labels: { pool: 'sim' }, last_heartbeat_at: now };
  baseWorkers.push(w);
  for (let i = 0; i < 8 && gpus.length < 4 + SCALE_GPUS; i++) gpus.push(gpu(w, i, 'NVIDIA H100 80GB HBM3', 80, 20 + (id + i) % 50, 16 + (id + i) % 40, 2, (id * 7 + i) % 100, 40 + i, 300));
}
const workers = baseWorkers.map((w) => ({ ...w, status: { gpus: gpus.filter((g) => g.worker_id === w.id) } }));
const projects = [
  { id: 1, name: 'demo', description: 'The first-run demo', max_gpus: null, max_vram_gib: null, max_instances: null, limits: null, created_at: ago(86400 * 9) },
  { id: 2, name: 'finance-ai', description: '財務部門的模型', max_gpus: 4, max_vram_gib: 320, max_instances: 8, limits: { requests_per_minute: 600 }, created_at: ago(86400 * 3) },
];
const models = [
  { id: 1, name: 'demo-chat', project_id: 1, replicas: 1, ready_replicas: 1, source: { type: 'simulated', params_b: 8 }, backend: '', backend_version: '', created_at: ago(86400 * 9) },
  { id: 2, name: 'qwen2.5-72b', project_id: 2, replicas: 2, ready_replicas: 1, source: { type: 'huggingface', repo: 'Qwen/Qwen2.5-72B-Instruct-GGUF' }, backend: 'llama.cpp', backend_version: 'b5000', created_at: ago(86400) },
  { id: 3, name: 'bge-m3', project_id: 2, replicas: 1, ready_replicas: 1, source: { type: 'local_path', path: '/models/bge-m3' }, backend: 'vllm', backend_version: '', created_at: ago(3600) },
];
const inst = (id, model, worker, state, gpusIdx, msg = '') => ({
  id, name: `${models[model - 1].name}-${id}`, model_id: model, project_id: models[model - 1].project_id, worker_id: worker?.id ?? null,
  worker_name: worker?.name ?? '', state, state_message: msg, port: worker ? 40000 + id : 0, restart_count: id === 3 ? 2 : 0,
  gpu_indexes: gpusIdx, claim: { vram: Object.fromEntries(gpusIdx.map((g) => [g, 40 * GiB])) }, created_at: ago(600 * id),
});
const instances = [inst(1, 1, w1, 'RUNNING', [1]), inst(2, 2, w1, 'RUNNING', [0]), inst(3, 2, null, 'UNSCHEDULABLE', [], 'no worker has 2 free GPUs with 80 GiB'), inst(4, 3, w2, 'RUNNING', [0])];
for (let id = 5; instances.length < 4 + SCALE_INSTANCES; id++) {
  const w = workers[3 + (id % Math.max(1, workers.length - 3))] ?? w1;
  instances.push(inst(id, 1, w, 'RUNNING', [id % 8]));
}
models[0].replicas += SCALE_INSTANCES;
models[0].ready_replicas += SCALE_INSTANCES;
const keys = [
  { id: 1, name: 'demo', project_id: 1, prefix: 'sk-segma-3fA9', scope: 'inference', allowed_models: '*', expires_at: null, last_used_at: ago(30), revoked_at: null, created_at: ago(86400 * 9) },
  { id: 2, name: 'ci', project_id: 2, prefix: 'sk-segma-Qx71', scope: 'all', allowed_models: ['qwen2.5-72b'], expires_at: ago(-86400 * 90), last_used_at: null, revoked_at: null, created_at: ago(86400) },
];
const users = [
  { id: 1, username: 'admin', full_name: 'Administrator', is_admin: true, is_active: true, require_password_change: false, created_at: ago(86400 * 9) },
  { id: 2, username: 'mei', full_name: '林美玲', is_admin: false, is_active: true, require_password_change: false, created_at: ago(86400 * 2) },
];
const routes = [{ id: 1, name: 'chat', project_id: 2, description: 'Qwen with demo fallback', targets: [{ model_id: 2, weight: 3 }, { model_id: 3, weight: 0 }], updated_at: ago(500) }];
const files = [
  { id: 1, worker_name: 'gpu-node-1', source: 'huggingface', source_key: 'Qwen/Qwen2.5-72B-Instruct-GGUF@main', backend: 'llama.cpp', local_path: '/var/lib/segma/models/qwen', state: 'ready', state_message: '', size_bytes: 47 * GiB, downloaded_bytes: 47 * GiB, progress: 100 },
  { id: 2, worker_name: 'gpu-node-2', source: 'huggingface', source_key: 'BAAI/bge-m3@main', backend: 'vllm', local_path: '/var/lib/segma/models/bge', state: 'downloading', state_message: '', size_bytes: 2.2 * GiB, downloaded_bytes: 1.3 * GiB, progress: 59 },
];
const backends = [
  { name: 'llama.cpp', built_in: true, default_version: 'b5000', versions: { b5000: {} }, model_formats: ['gguf'] },
  { name: 'vllm', built_in: true, default_version: '0.8.5', versions: { '0.8.5': {} }, model_formats: ['safetensors'] },
  { name: 'engine-sim', built_in: true, default_version: 'v1', versions: { v1: {} }, model_formats: ['simulated'] },
];
const usage = {
  project: [{ project: '1', requests: 1200, errors: 3, prompt_tokens: 48000, completion_tokens: 152000, cached_tokens: 0, gpu_hours: 96, vram_gib_hours: 3840, cost: 312.5 }, { project: '2', requests: 5400, errors: 12, prompt_tokens: 910000, completion_tokens: 2210000, cached_tokens: 0, gpu_hours: 720, vram_gib_hours: 57600, cost: 2304.75 }],
  model: [{ model: 'demo-chat', requests: 1200, errors: 3, prompt_tokens: 48000, completion_tokens: 152000, cached_tokens: 0 }, { model: 'qwen2.5-72b', requests: 5000, errors: 10, prompt_tokens: 900000, completion_tokens: 2200000, cached_tokens: 0 }],
  route: [{ route: '', requests: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0, gpu_hours: 816, vram_gib_hours: 61440, cost: 2611.2 }, { route: 'demo-chat', requests: 1200, errors: 3, prompt_tokens: 48000, completion_tokens: 152000, cached_tokens: 0, gpu_hours: 0, vram_gib_hours: 0, cost: 1.05 }],
  gpu_type: [{ gpu_type: 'NVIDIA H200', requests: 6600, errors: 15, prompt_tokens: 958000, completion_tokens: 2362000, cached_tokens: 0, gpu_hours: 816, vram_gib_hours: 61440, cost: 2617.25 }],
  key: [{ key: '1', requests: 1200, errors: 3, prompt_tokens: 48000, completion_tokens: 152000, cached_tokens: 0 }],
  user: [{ user: '1', requests: 6600, errors: 15, prompt_tokens: 958000, completion_tokens: 2362000, cached_tokens: 0 }],
};

const lists = {
  '/v2/workers': workers, '/v2/gpus': gpus, '/v2/projects': projects, '/v2/models': models, '/v2/model-instances': instances,
  '/v2/api-keys': keys, '/v2/users': users, '/v2/model-routes': routes, '/v2/model-files': files, '/v2/backends': backends,
  '/v2/clusters': [{ id: 1, name: 'default', registration_token: 'segma-reg-8f2c1d9e7a' }],
};
let signedIn = false;
// Open watch streams: {path, filters, res}.
const watchers = new Set();
const matches = (item, filters) => filters.every(([k, v]) => String(item[k]) === v);
const publish = (p, type, item) => {
  for (const w of watchers) if (w.path === p && matches(item, w.filters)) w.res.write(`data: ${JSON.stringify({ type, id: item.id, data: item })}\n\n`);
};
// One simulated change: a worker's heartbeat (a GPU's utilization moves) or an instance's restart.
let tick = 0;
function change() {
  tick++;
  if (tick % 2 === 0) {
    const w = workers[tick % workers.length];
    const g = w.status.gpus[tick % Math.max(1, w.status.gpus.length)];
    if (g) g.utilization = (g.utilization + 7) % 100;
    w.last_heartbeat_at = new Date().toISOString();
    publish('/v2/workers', 'UPDATED', w);
  } else {
    const i = instances[tick % instances.length];
    i.restart_count++;
    i.state = i.state === 'RUNNING' ? 'STARTING' : 'RUNNING';
    publish('/v2/model-instances', 'UPDATED', i);
  }
}
function updates(rate, seconds, done) {
  // Sent on a fixed schedule (the n-th event at n/rate s), a few per timer tick.
  const start = Date.now();
  const total = Math.round(rate * seconds);
  let sent = 0;
  const timer = setInterval(() => {
    const due = Math.min(total, Math.floor(((Date.now() - start) / 1000) * rate));
    for (; sent < due; sent++) change();
    if (sent >= total) {
      clearInterval(timer);
      done(sent);
    }
  }, 10);
}
const json = (res, status, body) => {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body));
};
http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  if (p === '/mock/updates' && req.method === 'POST') {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const { rate = 100, seconds = 10 } = body ? JSON.parse(body) : {};
      updates(rate, seconds, (sent) => json(res, 200, { sent }));
    });
    return;
  }
  if (p.startsWith('/v2/') || p.startsWith('/v1/')) {
    if (p === '/v2/auth/login') {
      signedIn = true;
      res.setHeader('Set-Cookie', ['segma_session=mock; Path=/; HttpOnly', 'segma_csrf=mock; Path=/']);
      return json(res, 200, { token: 'mock', user: users[0] });
    }
    if (p === '/v2/auth/logout') {
      signedIn = false;
      res.writeHead(204);
      return res.end();
    }
    if (!signedIn) return json(res, 401, { error: { code: 'unauthenticated', message: 'authentication required' } });
    if (p === '/v2/users/me') return json(res, 200, { ...users[0], projects: [] });
    if (p === '/v2/usage') return json(res, 200, { currency: 'USD', items: usage[url.searchParams.get('group_by') ?? 'project'] ?? [] });
    if (p === '/v2/model-evaluations') return json(res, 200, { fits: true, summary: 'placed on gpu-node-1', reasons: { 'gpu-node-2': 'needs 16.4 GiB on one GPU, the largest free is 12.0 GiB', 'gpu-node-3': 'in maintenance' }, placement: { worker_name: 'gpu-node-1', gpu_indexes: [1], vram: { 1: 16.4 * GiB }, ram: 0, subordinates: [] } });
    const one = /^(\/v2\/[a-z-]+)\/(\d+)$/.exec(p);
    if (one && lists[one[1]]) return json(res, 200, lists[one[1]].find((x) => String(x.id) === one[2]) ?? {});
    let items = lists[p];
    if (!items) return json(res, 404, { error: { code: 'not_found', message: `no route for ${p}` } });
    const filters = [...url.searchParams].filter(([k]) => !['watch', 'page', 'per_page'].includes(k));
    items = items.filter((i) => matches(i, filters));
    if (url.searchParams.get('watch') === 'true') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      for (const i of items) res.write(`data: ${JSON.stringify({ type: 'CREATED', id: i.id, data: i })}\n\n`);
      res.write(': watching\n\n');
      const w = { path: p, filters, res };
      watchers.add(w);
      req.on('close', () => watchers.delete(w));
      return;
    }
    const page = Math.max(1, Number(url.searchParams.get('page') ?? 1));
    const perPage = Math.min(500, Math.max(1, Number(url.searchParams.get('per_page') ?? 100)));
    return json(res, 200, { items: items.slice((page - 1) * perPage, page * perPage), pagination: { page, per_page: perPage, total: items.length } });
  }
  let file = path.join(dist, p === '/' ? 'index.html' : p);
  if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) file = path.join(dist, 'index.html');
  const type = file.endsWith('.js') ? 'text/javascript' : file.endsWith('.css') ? 'text/css' : 'text/html';
  res.writeHead(200, { 'Content-Type': type });
  fs.createReadStream(file).pipe(res);
}).listen(port, '127.0.0.1', () => console.log(`mock segma on http://127.0.0.1:${port}`));
