import { useMemo, useState } from 'react';
import { Badge, Button, Code, Group, Modal, Stack, Text, Textarea, Title } from '@mantine/core';
import { useQuery } from '@tanstack/react-query';
import { api, ApiError, listAll, type Gpu, type GpuSlice, type Worker } from '../api';
import { usePermissions } from '../auth';
import { ErrorAlert, formatPairs, PageHeader, parsePairs, StateBadge, VirtualTable, VramBar } from '../components';
import { useWorkersAndGpus } from '../hooks';
import { formatBytes, useI18n } from '../i18n';

function AddWorker() {
  const { t } = useI18n();
  const [open, setOpen] = useState(false);
  const clusters = useQuery({
    queryKey: ['clusters'],
    queryFn: () => listAll<{ id: number; name: string; registration_token: string }>('/v2/clusters'),
    enabled: open,
  });
  const token = clusters.data?.[0]?.registration_token ?? '…';
  return (
    <>
      <Button onClick={() => setOpen(true)}>{t('workers.add')}</Button>
      <Modal opened={open} onClose={() => setOpen(false)} title={t('workers.add')} size="lg">
        <Text size="sm" mb="xs">
          {t('workers.addHint')}
        </Text>
        <Code block data-testid="add-worker-command">{`segma worker --server ${window.location.origin} --token ${token}`}</Code>
      </Modal>
    </>
  );
}

function LabelsEditor({ worker, onClose }: { worker: Worker; onClose: () => void }) {
  const { t } = useI18n();
  const [text, setText] = useState(formatPairs(worker.labels));
  const [error, setError] = useState<string>();
  const save = async () => {
    try {
      await api('PATCH', `/v2/workers/${worker.id}`, { labels: parsePairs(text) });
      onClose();
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    }
  };
  return (
    <Modal opened onClose={onClose} title={`${t('workers.editLabels')}: ${worker.name}`}>
      <Stack>
        <Textarea label={t('workers.labels')} description={t('workers.labelsHint')} value={text} onChange={(e) => setText(e.currentTarget.value)} autosize minRows={3} error={error} />
        <Group justify="flex-end">
          <Button variant="default" onClick={onClose}>
            {t('common.cancel')}
          </Button>
          <Button onClick={save}>{t('common.save')}</Button>
        </Group>
      </Stack>
    </Modal>
  );
}

// The engines held to a VRAM limit on one GPU: each with what it holds of its limit, and a red
// count of the allocations the limit refused (the claim is too small for what the engine does).
function Slices({ slices }: { slices?: GpuSlice[] }) {
  const { t, locale } = useI18n();
  if (!slices?.length) return <Text size="sm" c="dimmed">—</Text>;
  const b = (n: number) => formatBytes(locale, n);
  return (
    <Stack gap={2}>
      {slices.map((s) => (
        <Group key={s.instance_id} gap={6} wrap="nowrap" title={t('gpu.sliceTitle', { used: b(s.memory_used), limit: b(s.memory_limit), n: s.limit_hits })}>
          <Text size="xs" truncate>
            {s.instance_name ?? `#${s.instance_id}`} · {b(s.memory_used)} / {b(s.memory_limit)}
          </Text>
          {s.limit_hits > 0 && (
            <Badge size="xs" color="red" variant="light">
              {t('gpu.sliceRefused', { n: s.limit_hits })}
            </Badge>
          )}
        </Group>
      ))}
    </Stack>
  );
}

export default function Workers() {
  const { t, ago, num } = useI18n();
  const perms = usePermissions();
  const { workers, gpus } = useWorkersAndGpus();
  const [editing, setEditing] = useState<Worker>();
  const [error, setError] = useState<unknown>();
  // Columns keep their identity between renders, so the table re-renders only the rows that
  // changed (a heartbeat changes one worker; the GPU list is re-read at most once a second).
  const workerColumns = useMemo(() => {
    const toggleMaintenance = async (w: Worker) => {
      setError(undefined);
      try {
        await api('PATCH', `/v2/workers/${w.id}`, { maintenance: w.state !== 'MAINTENANCE' });
      } catch (e) {
        setError(e);
      }
    };
    return [
    { key: 'name', header: t('common.name'), render: (w: Worker) => <b>{w.name}</b> },
    { key: 'state', header: t('common.state'), width: 140, render: (w: Worker) => <StateBadge state={w.state} /> },
    { key: 'address', header: t('workers.address'), render: (w: Worker) => `${w.address}:${w.port}` },
    { key: 'labels', header: t('workers.labels'), render: (w: Worker) => formatPairs(w.labels).replace(/\n/g, ', ') || '—' },
    { key: 'gpus', header: t('dash.gpus'), width: 70, render: (w: Worker) => num(w.status?.gpus?.length ?? 0) },
    { key: 'hb', header: t('workers.heartbeat'), render: (w: Worker) => ago(w.last_heartbeat_at) },
    ...(perms.isAdmin
      ? [
          {
            key: 'actions',
            header: t('common.actions'),
            width: 290,
            render: (w: Worker) => (
              <Group gap={4} wrap="nowrap">
                <Button size="compact-xs" variant="light" onClick={() => toggleMaintenance(w)}>
                  {w.state === 'MAINTENANCE' ? t('workers.maintenanceOff') : t('workers.maintenanceOn')}
                </Button>
                <Button size="compact-xs" variant="default" onClick={() => setEditing(w)}>
                  {t('workers.editLabels')}
                </Button>
              </Group>
            ),
          },
        ]
      : []),
    ];
  }, [t, ago, num, perms.isAdmin]);
  const gpuColumns = useMemo(() => [
    { key: 'id', header: t('gpu.id'), width: 150, render: (g: Gpu) => `${g.worker_name}:${g.index}` },
    { key: 'name', header: t('common.name'), render: (g: Gpu) => g.name },
    { key: 'vram', header: t('gpu.vram'), width: 'minmax(360px, 3fr)', render: (g: Gpu) => <VramBar gpu={g} compact /> },
    { key: 'util', header: t('gpu.utilization'), width: 90, render: (g: Gpu) => `${num(g.utilization)}%` },
    { key: 'temp', header: t('gpu.temperature'), width: 110, render: (g: Gpu) => `${num(g.temperature)}°C` },
    { key: 'power', header: t('gpu.power'), width: 90, render: (g: Gpu) => `${num(g.power)} W` },
    { key: 'procs', header: t('gpu.processes'), width: 90, render: (g: Gpu) => num(g.processes?.length ?? 0) },
    { key: 'slices', header: t('gpu.slices'), width: 'minmax(200px, 2fr)', render: (g: Gpu) => <Slices slices={g.slices} /> },
  ], [t, num]);
  return (
    <Stack>
      <PageHeader title={t('workers.title')}>{perms.isAdmin && <AddWorker />}</PageHeader>
      <ErrorAlert error={error} />
      <VirtualTable label={t('workers.title')} rows={workers.items} columns={workerColumns} rowKey={(w) => w.id} testId="workers-table" />
      <Title order={2} size="h3">
        {t('workers.gpusTitle')}
      </Title>
      <VirtualTable label={t('workers.gpusTitle')} rows={gpus} columns={gpuColumns} rowKey={(g) => g.id} rowHeight={56} height={560} testId="gpus-table" />
      {editing && <LabelsEditor worker={editing} onClose={() => setEditing(undefined)} />}
    </Stack>
  );
}
