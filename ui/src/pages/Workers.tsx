import { useMemo, useState } from 'react';
import { Button, Code, Group, Modal, Stack, Text, Textarea, Title } from '@mantine/core';
import { useQuery } from '@tanstack/react-query';
import { api, ApiError, listAll, type Gpu, type GpuSlice, type Worker } from '../api';
import { usePermissions } from '../auth';
import { ErrorAlert, formatPairs, PageHeader, parsePairs, RowButton, StateBadge, Tag, VirtualTable, VramBar } from '../components';
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

// The engines held to a VRAM limit on one GPU, in the two lines a row has: the engine (or how
// many there are) with a red count of the allocations the limit refused (the claim is too small
// for what the engine does), then what they hold of their limits. Each engine's own numbers are
// in the title.
function Slices({ slices }: { slices?: GpuSlice[] }) {
  const { t, locale } = useI18n();
  if (!slices?.length) return <Text size="sm" c="dimmed">—</Text>;
  const b = (n: number) => formatBytes(locale, n);
  const sum = (f: (s: GpuSlice) => number) => slices.reduce((a, s) => a + f(s), 0);
  const refused = sum((s) => s.limit_hits);
  const name = (s: GpuSlice) => s.instance_name ?? `#${s.instance_id}`;
  const title = slices
    .map((s) => `${name(s)}: ${t('gpu.sliceTitle', { used: b(s.memory_used), limit: b(s.memory_limit), n: s.limit_hits })}`)
    .join('\n');
  return (
    <Stack gap={0} title={title} style={{ minWidth: 0 }} data-testid="slices" data-count={slices.length} data-used={sum((s) => s.memory_used)} data-limit={sum((s) => s.memory_limit)}>
      <Group gap={6} wrap="nowrap">
        <Text size="xs" truncate style={{ minWidth: 0 }}>
          {slices.length === 1 ? name(slices[0]) : t('gpu.sliceCount', { n: slices.length })}
        </Text>
        {refused > 0 && (
          <Tag color="red" data-testid="slice-refused">
            {t('gpu.sliceRefused', { n: refused })}
          </Tag>
        )}
      </Group>
      <Text size="xs" c="dimmed" style={{ whiteSpace: 'nowrap' }}>
        {b(sum((s) => s.memory_used))} / {b(sum((s) => s.memory_limit))}
      </Text>
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
                <RowButton onClick={() => toggleMaintenance(w)}>
                  {w.state === 'MAINTENANCE' ? t('workers.maintenanceOff') : t('workers.maintenanceOn')}
                </RowButton>
                <RowButton data-variant="default" onClick={() => setEditing(w)}>
                  {t('workers.editLabels')}
                </RowButton>
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
    { key: 'slices', header: t('gpu.slices'), width: 'minmax(190px, 2fr)', render: (g: Gpu) => <Slices slices={g.slices} /> },
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
