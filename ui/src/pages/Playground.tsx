import { lazy, Suspense, useMemo, useRef, useState } from 'react';
import { Alert, Button, Checkbox, Group, NumberInput, Paper, PasswordInput, SegmentedControl, Select, SimpleGrid, Stack, Text, Textarea, TextInput } from '@mantine/core';
import { api, ApiError, useWatch, type ApiKey, type Model } from '../api';
import { PageHeader, Tag } from '../components';
import { rfc3339, useProjects } from '../hooks';
import { useI18n } from '../i18n';

const Markdown = lazy(() => import('../Markdown'));

interface Answer {
  text: string;
  ttftMs?: number;
  tokensPerS?: number;
  tokens?: number;
  error?: string;
  done: boolean;
}

// A short-lived inference key per project, created for this browser tab (kept in sessionStorage).
async function tempKey(projectId: number): Promise<string> {
  const stored = sessionStorage.getItem(`segma.playkey.${projectId}`);
  if (stored) {
    const { secret, expires } = JSON.parse(stored) as { secret: string; expires: number };
    if (expires > Date.now() + 60_000) return secret;
  }
  const expires = Date.now() + 3600_000;
  const k = await api<ApiKey>('POST', '/v2/api-keys', {
    name: `playground-${Date.now()}`,
    project_id: projectId,
    scope: 'inference',
    expires_at: rfc3339(new Date(expires)),
  });
  sessionStorage.setItem(`segma.playkey.${projectId}`, JSON.stringify({ secret: k.secret, expires }));
  return k.secret!;
}

async function streamChat(
  key: string,
  body: Record<string, unknown>,
  signal: AbortSignal,
  update: (a: Answer) => void,
) {
  const start = performance.now();
  let first: number | undefined;
  let text = '';
  let chunks = 0;
  let usageTokens: number | undefined;
  const send = () =>
    fetch('/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      signal,
    });
  let res = await send();
  // A key created a moment ago reaches the gateway within a second (its key table follows the
  // store's events): retry a 401 a few times before reporting it.
  for (let i = 0; res.status === 401 && i < 10; i++) {
    await new Promise((r) => setTimeout(r, 200));
    res = await send();
  }
  if (!res.ok) {
    const e = await res.json().catch(() => ({}));
    throw new Error(e?.error?.message ?? res.statusText);
  }
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const stats = (done: boolean): Answer => {
    const now = performance.now();
    const tokens = usageTokens ?? chunks;
    const genS = first !== undefined ? (now - first) / 1000 : 0;
    return { text, ttftMs: first !== undefined ? first - start : undefined, tokens, tokensPerS: genS > 0 && tokens > 1 ? (tokens - 1) / genS : undefined, done };
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line.startsWith('data:')) continue;
      const data = line.slice(5).trim();
      if (data === '[DONE]') continue;
      const chunk = JSON.parse(data);
      const delta = chunk.choices?.[0]?.delta?.content;
      if (chunk.usage?.completion_tokens) usageTokens = chunk.usage.completion_tokens;
      if (delta) {
        if (first === undefined) first = performance.now();
        text += delta;
        chunks++;
        update(stats(false));
      }
    }
  }
  update(stats(true));
}

function AnswerView({ a, label }: { a?: Answer; label: string }) {
  const { t, num } = useI18n();
  if (!a) return null;
  return (
    <Paper withBorder p="md" data-testid="answer" data-done={a.done}>
      <Group justify="space-between" mb="xs">
        <Text fw={600} size="sm">
          {label}
        </Text>
        <Group gap={6}>
          {a.ttftMs !== undefined && <Tag color="indigo" data-testid="ttft">{t('play.ttft')}: {num(a.ttftMs)} ms</Tag>}
          {a.tokensPerS !== undefined && <Tag color="green" data-testid="tps">{t('play.tps')}: {num(a.tokensPerS, 1)}</Tag>}
          {a.tokens !== undefined && <Tag color="gray">{t('play.tokens')}: {num(a.tokens)}</Tag>}
        </Group>
      </Group>
      {a.error ? (
        <Alert color="red">{a.error}</Alert>
      ) : (
        <div className="chat-msg" data-testid="answer-text">
          <Suspense fallback={<Text>{a.text}</Text>}>
            <Markdown text={a.text} />
          </Suspense>
        </div>
      )}
    </Paper>
  );
}

export default function Playground() {
  const { t } = useI18n();
  const models = useWatch<Model>('/v2/models');
  const projects = useProjects();
  const projectName = useMemo(() => new Map((projects.data ?? []).map((p) => [p.id, p.name])), [projects.data]);
  const options = models.items.map((m) => ({ value: String(m.id), label: `${m.name} (${projectName.get(m.project_id) ?? m.project_id})` }));
  const [modelId, setModelId] = useState<string | null>(null);
  const [compare, setCompare] = useState(false);
  const [modelId2, setModelId2] = useState<string | null>(null);
  const [keyMode, setKeyMode] = useState('temp');
  const [pasted, setPasted] = useState('');
  const [system, setSystem] = useState('');
  const [temperature, setTemperature] = useState<number | string>(0.7);
  const [maxTokens, setMaxTokens] = useState<number | string>(256);
  const [stop, setStop] = useState('');
  const [prompt, setPrompt] = useState('');
  const [answers, setAnswers] = useState<(Answer | undefined)[]>([]);
  const [error, setError] = useState<string>();
  const abort = useRef<AbortController>();
  const chosen = (id: string | null) => models.items.find((m) => String(m.id) === id);
  const m1 = chosen(modelId ?? (options[0]?.value ?? null));
  const send = async () => {
    setError(undefined);
    const targets = [m1, compare ? chosen(modelId2) : undefined].filter(Boolean) as Model[];
    if (!targets.length || !prompt.trim()) return;
    abort.current?.abort();
    const ctl = new AbortController();
    abort.current = ctl;
    setAnswers(targets.map(() => ({ text: '', done: false })));
    const messages = [...(system.trim() ? [{ role: 'system', content: system }] : []), { role: 'user', content: prompt }];
    const stops = stop.split(',').map((s) => s.trim()).filter(Boolean);
    await Promise.all(
      targets.map(async (m, i) => {
        const set = (a: Answer) => setAnswers((old) => old.map((x, j) => (j === i ? a : x)));
        try {
          const key = keyMode === 'temp' ? await tempKey(m.project_id) : pasted.trim();
          await streamChat(key, { model: m.name, messages, temperature: Number(temperature), max_tokens: Number(maxTokens), ...(stops.length ? { stop: stops } : {}) }, ctl.signal, set);
        } catch (e) {
          if (ctl.signal.aborted) return;
          set({ text: '', done: true, error: e instanceof ApiError || e instanceof Error ? e.message : String(e) });
        }
      }),
    );
  };
  return (
    <Stack>
      <PageHeader title={t('play.title')} />
      <SimpleGrid cols={{ base: 1, md: 2 }}>
        <Stack>
          <Select label={t('play.model')} data={options} value={m1 ? String(m1.id) : null} onChange={setModelId} allowDeselect={false} data-testid="play-model" />
          <Checkbox label={t('play.compare')} checked={compare} onChange={(e) => setCompare(e.currentTarget.checked)} />
          {compare && <Select label={`${t('play.model')} 2`} data={options} value={modelId2} onChange={setModelId2} />}
          <SegmentedControl value={keyMode} onChange={setKeyMode} data={[{ value: 'temp', label: t('play.keyTemp') }, { value: 'paste', label: t('play.keyPaste') }]} aria-label={t('play.key')} />
          {keyMode === 'paste' && <PasswordInput label={t('play.key')} value={pasted} onChange={(e) => setPasted(e.currentTarget.value)} />}
        </Stack>
        <Stack>
          <Textarea label={t('play.system')} value={system} onChange={(e) => setSystem(e.currentTarget.value)} autosize minRows={2} />
          <Group grow>
            <NumberInput label={t('play.temperature')} value={temperature} onChange={setTemperature} min={0} max={2} step={0.1} decimalScale={2} />
            <NumberInput label={t('play.maxTokens')} value={maxTokens} onChange={setMaxTokens} min={1} />
          </Group>
          <TextInput label={t('play.stop')} value={stop} onChange={(e) => setStop(e.currentTarget.value)} />
        </Stack>
      </SimpleGrid>
      <Textarea label={t('play.prompt')} value={prompt} onChange={(e) => setPrompt(e.currentTarget.value)} autosize minRows={3} data-testid="play-prompt"
        onKeyDown={(e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send(); }} />
      <Group>
        <Button onClick={send} data-testid="play-send" disabled={!m1}>
          {t('play.send')}
        </Button>
        <Button variant="default" onClick={() => abort.current?.abort()}>
          {t('play.stopGen')}
        </Button>
        <Button variant="subtle" onClick={() => setAnswers([])}>
          {t('play.clear')}
        </Button>
      </Group>
      {error && <Alert color="red">{error}</Alert>}
      <SimpleGrid cols={{ base: 1, md: answers.length > 1 ? 2 : 1 }}>
        {answers.map((a, i) => (
          <AnswerView key={i} a={a} label={(i === 0 ? m1 : chosen(modelId2))?.name ?? t('play.assistant')} />
        ))}
      </SimpleGrid>
    </Stack>
  );
}
