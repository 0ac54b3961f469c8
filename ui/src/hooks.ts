import { useEffect, useMemo, useRef } from 'react';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { api, listAll, useWatch, type Gpu, type Instance, type Model, type Project, type UsageRow, type Worker } from './api';

export const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

// Workers from their watch stream, and the GPU list (/v2/gpus, which adds each GPU's VRAM
// allocated by claims) re-read whenever a worker event arrives (a heartbeat, a new claim): at most
// once a second, and never more than a tenth of the time, so a pool of 10,000 GPUs (20 pages) is
// not re-read back to back. Event-driven, no polling. main.tsx starts the first read before the
// first render when the dashboard is the page.
// No structural sharing: comparing a fresh list of 10,000 GPUs with the last one, object by object,
// is one 70 ms task (200+ ms on a loaded core); the table re-renders only its visible rows anyway.
export const gpusQuery = { queryKey: ['gpus'], queryFn: () => listAll<Gpu>('/v2/gpus'), staleTime: Infinity, structuralSharing: false };

export function useWorkersAndGpus() {
  const workers = useWatch<Worker>('/v2/workers');
  const qc = useQueryClient();
  const gpus = useQuery(gpusQuery);
  const last = useRef(0);
  const took = useRef(0); // how long the last re-read took
  if (last.current && gpus.dataUpdatedAt > last.current) took.current = gpus.dataUpdatedAt - last.current;
  const timer = useRef<ReturnType<typeof setTimeout>>();
  useEffect(() => {
    if (!workers.connected) return;
    const wait = Math.max(0, last.current + Math.max(1000, 10 * took.current) - Date.now());
    clearTimeout(timer.current);
    timer.current = setTimeout(() => {
      last.current = Date.now();
      qc.invalidateQueries({ queryKey: ['gpus'] });
    }, wait);
    return () => clearTimeout(timer.current);
  }, [workers.items, workers.connected, qc]);
  return { workers, gpus: gpus.data ?? [], gpusLoading: gpus.isLoading };
}

export function useProjects() {
  return useQuery({ queryKey: ['projects'], queryFn: () => listAll<Project>('/v2/projects'), staleTime: 30_000 });
}

// Rows of GET /v2/usage; each carries the report's currency. `bucket`: hour | day | month.
export function useUsage(groupBy: string, from: Date, to?: Date, projectId?: number, bucket?: string) {
  const params = new URLSearchParams({ group_by: groupBy, from: rfc3339(from) });
  if (to) params.set('to', rfc3339(to));
  if (projectId) params.set('project_id', String(projectId));
  if (bucket) params.set('bucket', bucket);
  return useQuery({
    queryKey: ['usage', params.toString()],
    queryFn: () =>
      api<{ items: UsageRow[]; currency?: string }>('GET', `/v2/usage?${params}`).then((r) =>
        r.items.map((i) => ({ ...i, key: String(i[groupBy] ?? ''), currency: r.currency })),
      ),
    staleTime: 30_000,
  });
}

export function daysAgo(n: number): Date {
  const d = new Date();
  if (n === 0) {
    d.setHours(0, 0, 0, 0);
    return d;
  }
  d.setMinutes(0, 0, 0);
  return new Date(d.getTime() - n * 86400_000);
}

// Deployments with their ready replicas live: the model rows' ready_replicas is counted when a
// model is read, and instance changes emit no model event, so the count comes from the instances'
// own watch stream.
export function useDeployments(projectId?: number) {
  const q = projectId ? `?project_id=${projectId}` : '';
  const models = useWatch<Model>(`/v2/models${q}`);
  const instances = useWatch<Instance>(`/v2/model-instances${q}`);
  const items = useMemo(() => {
    const running = new Map<number, number>();
    for (const i of instances.items) if (i.state === 'RUNNING') running.set(i.model_id, (running.get(i.model_id) ?? 0) + 1);
    return models.items.map((m) => ({ ...m, ready_replicas: running.get(m.id) ?? 0 }));
  }, [models.items, instances.items]);
  return { items, instances: instances.items, connected: models.connected && instances.connected };
}

export function deploymentState(m: Model): string {
  if (m.replicas === 0) return 'STOPPED';
  return m.ready_replicas >= m.replicas ? 'READY' : 'PENDING';
}
