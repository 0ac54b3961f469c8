// Drives the segma gateway with OpenAI's own Node SDK (npm `openai`, pinned in
// scripts/install-openai-sdk) and with curl, as an existing application would. Run by
// tests/integration/openai_sdk_test.cc, which starts the stack and passes, in the environment:
//   SEGMA_GATEWAY   http://127.0.0.1:PORT (the server's /v1)
//   SEGMA_ENGINE    http://127.0.0.1:PORT of project A's engine (for the direct comparison)
//   SEGMA_ENGINE_KEY the secret that engine requires (docs/adr/0035-engine-secrets.md)
//   SEGMA_KEY_A     inference key of project A (every model)
//   SEGMA_KEY_B     inference key of project B (every model)
//   SEGMA_KEY_NARROW  key of project A allowed only the model "b-only"
//   SEGMA_KEY_LIMITED key of project A limited to 1 request per minute (optional)
//   SEGMA_RESULT    file to write {"tokens": {"A": n, "B": n}, "requests": {...}} to
// Exits 0 when every check passed; prints each failure.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const OpenAI = require('openai');

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing environment variable ${name}`);
  return v;
};
const GATEWAY = env('SEGMA_GATEWAY');
const ENGINE = env('SEGMA_ENGINE');

const client = (key) => new OpenAI({ apiKey: key, baseURL: `${GATEWAY}/v1`, maxRetries: 0 });
const a = client(env('SEGMA_KEY_A'));
const b = client(env('SEGMA_KEY_B'));

// What the engine reported, per project, to compare with GET /v2/usage afterwards.
const tokens = { A: 0, B: 0 };
const requests = { A: 0, B: 0 };
const tally = (project, usage) => {
  assert.ok(usage, 'usage reported');
  tokens[project] += usage.prompt_tokens + (usage.completion_tokens || 0);
  requests[project] += 1;
};

const messages = [{ role: 'user', content: 'Tell me about GPU sharing in one sentence.' }];
const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check('GET /v1/models lists only what the key may use', async () => {
  const ids = [];
  for await (const m of a.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), ['chat']);
  const idsB = [];
  for await (const m of b.models.list()) idsB.push(m.id);
  assert.deepEqual(idsB.sort(), ['b-only', 'chat']);
  const narrow = [];
  for await (const m of client(env('SEGMA_KEY_NARROW')).models.list()) narrow.push(m.id);
  assert.deepEqual(narrow, [], 'b-only belongs to project B, chat is not allowed');
});

let nonStreamUsage;
check('chat completion (non-streaming)', async () => {
  const r = await a.chat.completions.create({ model: 'chat', messages, max_tokens: 6 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.equal(r.usage.completion_tokens, 6);
  assert.ok(r.usage.prompt_tokens > 0);
  nonStreamUsage = r.usage;
  tally('A', r.usage);
});

check('chat completion with raw response headers', async () => {
  const { data, response } = await a.chat.completions
    .create({ model: 'chat', messages, max_tokens: 2 })
    .withResponse();
  assert.ok(response.headers.get('x-segma-overhead-us'), 'x-segma-overhead-us header');
  tally('A', data.usage);
});

check('streamed chat, read with the async iterator, usage asked for', async () => {
  const stream = await a.chat.completions.create({
    model: 'chat', messages, max_tokens: 8, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let contentChunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;  // the usage-only chunk
    if (choice.delta.content) { text += choice.delta.content; contentChunks++; }
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  assert.equal(contentChunks, 8, 'one chunk per token');
  assert.ok(text.length > 0);
  assert.ok(finish, 'finish_reason');
  assert.equal(usage.completion_tokens, 8);
  tally('A', usage);
});

check('streamed chat without stream_options has no usage chunk', async () => {
  const stream = await a.chat.completions.create({
    model: 'chat', messages, max_tokens: 6, stream: true,
  });
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert.ok(!chunk.usage, 'no usage on any chunk');
    assert.ok(chunk.choices.length > 0, 'no usage-only chunk');
  }
  assert.ok(chunks >= 6);
  // The engine still reported usage to the gateway; the same prompt and max_tokens cost the same.
  tally('A', nonStreamUsage);
});

check('stream cancelled by the client (controller.abort)', async () => {
  const stream = await a.chat.completions.create({
    model: 'chat', messages, max_tokens: 200, stream: true,
  });
  let n = 0;
  for await (const _ of stream) {
    if (++n === 2) { stream.controller.abort(); break; }
  }
  assert.equal(n, 2);
  // Metered as a client-closed request (499), billed for the completion tokens the gateway had
  // sent when the client left (at least what it read; the C++ side reads that row back).
  requests.A += 1;
});

check('text completion', async () => {
  const r = await a.completions.create({ model: 'chat', prompt: 'Once upon a time', max_tokens: 3 });
  assert.equal(r.object, 'text_completion');
  assert.ok(r.choices[0].text.length > 0);
  assert.equal(r.usage.completion_tokens, 3);
  tally('A', r.usage);
});

check('embeddings (the SDK asks for base64 and decodes)', async () => {
  const r = await a.embeddings.create({ model: 'chat', input: ['first text', 'second text'] });
  assert.equal(r.data.length, 2);
  assert.ok(r.data[0].embedding.length > 0);
  assert.ok(r.data[0].embedding.every((x) => typeof x === 'number' && Number.isFinite(x)));
  assert.notDeepEqual(r.data[0].embedding, r.data[1].embedding);
  tally('A', r.usage);
  const f = await a.embeddings.create({ model: 'chat', input: 'x', encoding_format: 'float' });
  assert.equal(f.data.length, 1);
  tally('A', f.usage);
});

check('project B reaches its own deployment of the same public name', async () => {
  const r = await b.chat.completions.create({ model: 'chat', messages, max_tokens: 5 });
  assert.equal(r.usage.completion_tokens, 5);
  tally('B', r.usage);
  const s = await b.chat.completions.create({
    model: 'chat', messages, max_tokens: 3, stream: true, stream_options: { include_usage: true },
  });
  let usage;
  for await (const c of s) if (c.usage) usage = c.usage;
  tally('B', usage);
});

const expectError = async (promise, Klass, status, fragment) => {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof Klass, `${e.constructor.name} (${e.status}: ${e.message}) is a ${Klass.name}`);
    assert.equal(e.status, status);
    assert.ok(e.error && typeof e.error.message === 'string', 'OpenAI error body');
    if (fragment) assert.match(e.message, fragment);
    return e;
  }
  assert.fail(`expected ${Klass.name}`);
};

check('401 AuthenticationError for a bad key', async () => {
  const e = await expectError(
    client('sk-segma-not-a-key').chat.completions.create({ model: 'chat', messages }),
    OpenAI.AuthenticationError, 401);
  assert.equal(e.type, 'authentication_error');
});

check('403 PermissionDeniedError for a model outside the allow-list', async () => {
  const e = await expectError(
    client(env('SEGMA_KEY_NARROW')).chat.completions.create({ model: 'chat', messages }),
    OpenAI.PermissionDeniedError, 403);
  assert.equal(e.type, 'permission_error');
});

check('404 NotFoundError for an unknown model or one of another project', async () => {
  const e = await expectError(
    a.chat.completions.create({ model: 'no-such-model', messages }), OpenAI.NotFoundError, 404);
  assert.equal(e.type, 'not_found_error');
  await expectError(a.chat.completions.create({ model: 'b-only', messages }), OpenAI.NotFoundError,
    404);
});

check('400 BadRequestError for a malformed request', async () => {
  await expectError(a.chat.completions.create({ messages }), OpenAI.BadRequestError, 400, /model/);
  await expectError(a.chat.completions.create({ model: 42, messages }), OpenAI.BadRequestError, 400);
  await expectError(a.chat.completions.create({ model: 'chat', messages, max_tokens: -1 }),
    OpenAI.BadRequestError, 400);
});

if (process.env.SEGMA_KEY_LIMITED) {
  check('429 RateLimitError with Retry-After', async () => {
    const limited = client(process.env.SEGMA_KEY_LIMITED);
    const create = () => limited.chat.completions.create({ model: 'chat', messages, max_tokens: 2 });
    // 1 request per minute, counted in windows aligned to the minute: the second request is
    // refused, or the third if a new minute began between the first two.
    let admitted = 0;
    let refused = null;
    while (!refused && admitted < 3) {
      try {
        tally('A', (await create()).usage);
        admitted += 1;
      } catch (err) {
        refused = err;
      }
    }
    assert.ok(admitted >= 1 && admitted <= 2, `${admitted} requests admitted before the 429`);
    const e = await expectError(Promise.reject(refused), OpenAI.RateLimitError, 429,
      /1 requests per minute/);
    const retryAfter = Number(e.headers['retry-after']);
    assert.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${e.headers['retry-after']}`);
  });
}

// curl, as a shell user would, and a byte-level comparison with the engine answered directly.
const curl = (url, key, body) => execFileSync('curl', [
  '-sS', '-N', '--fail-with-body', url, '-H', 'Content-Type: application/json',
  ...(key ? ['-H', `Authorization: Bearer ${key}`] : []), '-d', JSON.stringify(body),
], { encoding: 'utf8' });

// SSE events with the per-request id and timestamp blanked (the only fields that differ between
// two runs of the same request on engine-sim).
const events = (text) => text.split('\n\n').filter((e) => e.length > 0).map((e) =>
  e.replace(/"id":"[^"]*"/, '"id":"X"').replace(/"created":\d+/, '"created":0'));

check('curl: streaming through the gateway is chunk-for-chunk identical to direct', async () => {
  for (const streamOptions of [undefined, { include_usage: true }]) {
    const body = { model: 'chat', messages, max_tokens: 7, stream: true };
    if (streamOptions) body.stream_options = streamOptions;
    const via = curl(`${GATEWAY}/v1/chat/completions`, env('SEGMA_KEY_A'), body);
    const direct = curl(`${ENGINE}/v1/chat/completions`, env('SEGMA_ENGINE_KEY'), body);
    assert.deepEqual(events(via), events(direct));
    assert.ok(via.endsWith('data: [DONE]\n\n'));
    assert.equal(events(via).length, streamOptions ? 11 : 10);  // role, 7 tokens, finish, [usage], DONE
    tally('A', nonStreamUsage && { prompt_tokens: nonStreamUsage.prompt_tokens, completion_tokens: 7 });
  }
});

check('curl: non-streaming chat and the error body of a bad key', async () => {
  const r = JSON.parse(curl(`${GATEWAY}/v1/chat/completions`, env('SEGMA_KEY_B'),
    { model: 'chat', messages, max_tokens: 4 }));
  assert.equal(r.usage.completion_tokens, 4);
  tally('B', r.usage);
  let out;
  try {
    curl(`${GATEWAY}/v1/chat/completions`, 'sk-segma-bad', { model: 'chat', messages });
    assert.fail('curl --fail-with-body should have failed');
  } catch (e) {
    out = e.stdout;
  }
  const err = JSON.parse(out);
  assert.equal(err.error.type, 'authentication_error');
});

(async () => {
  let failed = 0;
  for (const { name, fn } of checks) {
    try {
      await fn();
      console.log(`ok    ${name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL  ${name}\n      ${(e && e.stack) || e}`);
    }
  }
  if (process.env.SEGMA_RESULT) {
    fs.writeFileSync(process.env.SEGMA_RESULT, JSON.stringify({ tokens, requests }));
  }
  console.log(`${checks.length - failed}/${checks.length} checks passed`);
  process.exit(failed ? 1 : 0);
})();
