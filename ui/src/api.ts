// The console's only way to the server: same-origin fetch with the HttpOnly session cookie, the
// CSRF header on every state-changing call (the server checks it against the segma_csrf cookie),
// and errors in the API's format turned into ApiError with the field the message names.
import { useEffect, useRef, useState } from 'react';

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    // Seconds from Retry-After (a sign-in lockout, a rate limit), when the server sent it.
    public retryAfter?: number,
  ) {
    super(message);
  }
  // The request field the server's message is about: "source.path must be absolute" → "source.path".
  get field(): string | undefined {
    const m = /^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*|\[\d+\])*)\b/.exec(this.message);
    return m ? m[1] : undefined;
  }
}

export function csrfToken(): string {
  const m = /(?:^|;\s*)segma_csrf=([^;]*)/.exec(document.cookie);
  return m ? decodeURIComponent(m[1]) : '';
}

export async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrfToken();
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = text;
  }
  if (!res.ok) {
    const err = (data as { error?: { code?: string; message?: string } } | undefined)?.error;
    if (res.status === 401 && !path.startsWith('/v2/auth/')) window.dispatchEvent(new Event('segma:unauthenticated'));
    // The server wants a new password first (an admin reset it meanwhile): back to the forced change.
    if (res.status === 403 && err?.code === 'password_change_required') window.dispatchEvent(new Event('segma:password-change-required'));
    const retry = Number(res.headers.get('Retry-After') ?? NaN);
    throw new ApiError(res.status, err?.code ?? String(res.status), err?.message ?? res.statusText, Number.isFinite(retry) ? retry : undefined);
  }
  return data as T;
}

export interface List<T> {
  items: T[];
  pagination: { page: number; per_page: number; total: number };
}

// Every page of a list (the server caps per_page at 500): the first page says how many there are,
// then the rest are read side by side (a list of 10,000 GPUs is 20 pages).
export async function listAll<T>(path: string): Promise<T[]> {
  const sep = path.includes('?') ? '&' : '?';
  const page = (n: number) => api<List<T>>('GET', `${path}${sep}page=${n}&per_page=500`);
  const first = await page(1);
  const pages = Math.ceil(first.pagination.total / Math.max(1, first.pagination.per_page || first.items.length));
  if (pages <= 1 || first.items.length === 0) return first.items;
  const rest = await Promise.all(Array.from({ length: pages - 1 }, (_, i) => page(i + 2)));
  return first.items.concat(...rest.map((l) => l.items));
}

export interface WatchState<T> {
  items: T[];
  connected: boolean;
  error?: string;
}

// A list that follows the server's watch stream (GET path?watch=true, server-sent events: the
// current list as CREATED events, then CREATED/UPDATED/DELETED as they happen). On a reconnect
// the server sends the whole list again, so the map is rebuilt from scratch. Updates are applied
// at most once per animation frame, so a burst of events costs one render.
export function useWatch<T extends { id: number | string }>(path: string | null): WatchState<T> {
  const [state, setState] = useState<WatchState<T>>({ items: [], connected: false });
  const map = useRef(new Map<number | string, T>());
  useEffect(() => {
    if (!path) return;
    map.current = new Map();
    let frame = 0;
    let fresh = true;
    const flush = () => {
      frame = 0;
      setState({ items: Array.from(map.current.values()), connected: true });
    };
    const sep = path.includes('?') ? '&' : '?';
    const es = new EventSource(`${path}${sep}watch=true`);
    es.onopen = () => {
      fresh = true;
    };
    es.onmessage = (m) => {
      const e = JSON.parse(m.data) as { type: string; id?: number | string; data: T };
      if (fresh) {
        map.current = new Map();
        fresh = false;
      }
      const id = e.data?.id ?? e.id;
      if (id === undefined) return;
      if (e.type === 'DELETED') map.current.delete(id);
      else map.current.set(id, e.data);
      if (!frame) frame = requestAnimationFrame(flush);
    };
    es.onerror = () => {
      setState((s) => ({ ...s, connected: false }));
      fresh = true;
    };
    // The stream says it is live with a comment; an empty list sends no event at all.
    const ready = setTimeout(() => {
      if (es.readyState === EventSource.OPEN) flush();
    }, 0);
    es.addEventListener('open', () => flush());
    return () => {
      clearTimeout(ready);
      if (frame) cancelAnimationFrame(frame);
      es.close();
    };
  }, [path]);
  return state;
}

// Types of the API objects the console shows (the fields it uses).
export interface User {
  id: number;
  username: string;
  full_name: string;
  is_admin: boolean;
  is_active: boolean;
  require_password_change: boolean;
  created_at: string;
  projects?: { project_id: number; role: Role }[];
}
export type Role = 'project-admin' | 'member' | 'viewer';
export interface Project {
  id: number;
  name: string;
  description: string;
  max_gpus: number | null;
  max_vram_gib: number | null;
  max_instances: number | null;
  limits?: Record<string, unknown> | null;
  created_at: string;
}
export interface Gpu {
  id: string;
  index: number;
  worker_id: number;
  worker_name: string;
  name: string;
  memory_total: number;
  memory_used: number;
  memory_allocated: number;
  memory_used_external: number;
  utilization: number;
  temperature: number;
  power: number;
  power_limit: number;
  simulated: boolean;
  processes?: { pid: number; name?: string; memory_used: number; managed?: boolean }[];
  mig_profile?: string;
  // Engines held to a VRAM limit on this GPU (gpu_sharing "enforced"), as the worker read them.
  slices?: GpuSlice[];
}
export interface GpuSlice {
  instance_id: number;
  instance_name?: string;
  model_id?: number;
  memory_limit: number;
  memory_used: number;
  limit_hits: number;
}
export interface Worker {
  id: number;
  name: string;
  state: string;
  state_message?: string;
  address: string;
  port: number;
  labels: Record<string, string>;
  last_heartbeat_at: string | null;
  maintenance?: boolean;
  status?: { gpus?: Omit<Gpu, 'id' | 'worker_id' | 'worker_name' | 'memory_allocated'>[] };
}
export interface Model {
  id: number;
  name: string;
  project_id: number;
  replicas: number;
  ready_replicas: number;
  source: { type: string; path?: string; repo?: string; params_b?: number };
  backend: string;
  backend_version: string;
  gpus_per_replica?: number;
  // Share of each of its GPUs' compute (1-100); null: no limit.
  gpu_compute_percent?: number | null;
  created_at: string;
}
export interface Instance {
  id: number;
  name: string;
  model_id: number;
  project_id: number;
  worker_id: number | null;
  worker_name: string;
  state: string;
  state_message: string;
  port: number;
  restart_count: number;
  gpu_indexes: number[];
  created_at: string;
}
export interface ApiKey {
  id: number;
  name: string;
  project_id: number;
  prefix: string;
  scope: string;
  allowed_models: string[] | '*';
  allowed_cidrs: string[] | null;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
  created_at: string;
  secret?: string;
}
export interface Evaluation {
  fits: boolean;
  summary: string;
  reasons: Record<string, string>;
  placement: null | {
    worker_name: string;
    gpu_indexes: number[];
    vram: Record<string, number>;
    ram: number;
    subordinates: { worker_name: string; gpu_indexes: number[]; vram: Record<string, number> }[];
  };
  // The engine segma chose for the model and why (null when none can run it).
  engine?: null | { backend: string; backend_version: string; format: string; automatic: boolean; reason: string };
  // The concurrency the claim covers (null when nothing was placed).
  serves?: null | { sequences: number | null; context_length: number | null; target_sequences: number | null };
  warnings?: string[];
  // What one replica is expected to serve, from segma's GPU measurements (null when not placed).
  performance?: null | {
    available: boolean;
    reason?: string;
    basis?: string;
    extrapolated?: boolean;
    sequences?: number;
    tokens_per_second_per_user?: number;
    ttft_ms?: number;
    single_user_tokens_per_second?: number;
    meets_targets?: boolean;
  };
}
export interface UsageRow {
  key: string;
  name?: string;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  cached_tokens: number;
  // GPU time and cost (absent from older servers); bucket only with ?bucket=.
  gpu_hours?: number;
  vram_gib_hours?: number;
  cost?: number;
  bucket?: string;
  currency?: string;
  [k: string]: unknown;
}

// A failed form submission as {field: message}: the field the server's message names (mapped by
// `field` onto the form's own names), else "form".
export function fieldErrors(e: unknown, field: (f: string) => string = (f) => f): Record<string, string> {
  if (e instanceof ApiError) return { [e.field ? field(e.field) : 'form']: e.message };
  return { form: e instanceof Error ? e.message : String(e) };
}

// The message of `errors` that belongs to none of the form's `fields` (shown above the buttons).
export function formError(errors: Record<string, string>, fields: readonly string[]): string | undefined {
  return Object.entries(errors).find(([k]) => !fields.includes(k))?.[1];
}
