import { useEffect, useMemo, useRef, useState } from 'react';
import { useNavigate, useParams } from 'react-router-dom';
import { Alert, Button, Checkbox, Group, Modal, NumberInput, Paper, SimpleGrid, Stack, Text, Title } from '@mantine/core';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { api, ApiError, useWatch, type Instance, type Model } from '../api';
import { usePermissions } from '../auth';
import { type Column, ErrorAlert, PageHeader, RowButton, StateBadge, VirtualTable } from '../components';
import { useI18n } from '../i18n';

// The engine's log: the last lines, then (with follow) every new line as the worker writes it.
function LogViewer({ instance, onClose }: { instance: Instance; onClose: () => void }) {
  const { t } = useI18n();
  const [text, setText] = useState('');
  const [follow, setFollow] = useState(true);
  const [error, setError] = useState<string>();
  const pre = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const abort = new AbortController();
    setText('');
    setError(undefined);
    (async () => {
      try {
        const res = await fetch(`/v2/model-instances/${instance.id}/logs?tail=500${follow ? '&follow=true' : ''}`, { signal: abort.signal });
        if (!res.ok) {
          const body = await res.json().catch(() => ({}));
          setError(body?.error?.message ?? res.statusText);
          return;
        }
        const reader = res.body!.getReader();
        const decoder = new TextDecoder();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          setText((s) => (s + decoder.decode(value, { stream: true })).slice(-200_000));
        }
      } catch (e) {
        if (!abort.signal.aborted) setError(String(e));
      }
    })();
    return () => abort.abort();
  }, [instance.id, follow]);
  useEffect(() => {
    if (pre.current) pre.current.scrollTop = pre.current.scrollHeight;
  }, [text]);
  return (
    <Modal opened onClose={onClose} title={t('deploy.logsOf', { name: instance.name })} size="xl">
      <Stack>
        <Checkbox label={t('deploy.follow')} checked={follow} onChange={(e) => setFollow(e.currentTarget.checked)} />
        {error && <Alert color="red">{error}</Alert>}
        <pre ref={pre} className="log-view mono" data-testid="log-view" data-has-log={text ? 'true' : 'false'} tabIndex={0}>
          {text || t('deploy.noLog')}
        </pre>
      </Stack>
    </Modal>
  );
}

export default function DeploymentDetail() {
  const { id } = useParams();
  const { t, date, bytes } = useI18n();
  const perms = usePermissions();
  const navigate = useNavigate();
  const qc = useQueryClient();
  const model = useQuery({ queryKey: ['model', id], queryFn: () => api<Model>('GET', `/v2/models/${id}`) });
  const models = useWatch<Model>(model.data ? `/v2/models?project_id=${model.data.project_id}` : null);
  const instances = useWatch<Instance>(`/v2/model-instances?model_id=${id}`);
  const row = models.items.find((m) => String(m.id) === id) ?? model.data;
  const [replicas, setReplicas] = useState<number | string>('');
  const [scaleError, setScaleError] = useState<string>();
  const [confirm, setConfirm] = useState(false);
  const [logOf, setLogOf] = useState<Instance>();
  const [error, setError] = useState<unknown>();
  // ready_replicas is counted when the model is read; the instances' stream keeps it live.
  const running = useMemo(() => instances.items.filter((i) => i.state === 'RUNNING').length, [instances.items]);
  const live = row && { ...row, ready_replicas: running };
  // The list sorted once per batch of watch events, and columns that keep their identity, so the
  // table re-renders only the rows that changed.
  const rows = useMemo(() => [...instances.items].sort((a, b) => a.id - b.id), [instances.items]);
  const columns = useMemo<Column<Instance>[]>(() => [
    { key: 'name', header: t('common.name'), render: (i) => i.name },
    { key: 'state', header: t('common.state'), width: 170, render: (i) => <StateBadge state={i.state} /> },
    { key: 'worker', header: t('common.worker'), render: (i) => i.worker_name || '—' },
    { key: 'gpus', header: t('deploy.gpus'), width: 80, render: (i) => i.gpu_indexes.join(', ') || '—' },
    { key: 'vram', header: t('gpu.vram'), width: 110, render: (i) => { const c = (i as unknown as { claim?: { vram?: Record<string, number> } }).claim; return c?.vram ? bytes(Object.values(c.vram).reduce((a, b) => a + b, 0)) : '—'; } },
    { key: 'port', header: t('deploy.port'), width: 80, render: (i) => i.port || '—' },
    { key: 'restarts', header: t('deploy.restarts'), width: 90, render: (i) => i.restart_count },
    { key: 'msg', header: t('deploy.message'), width: 'minmax(160px, 2fr)', render: (i) => <span title={i.state_message}>{i.state_message || '—'}</span> },
    { key: 'created', header: t('common.created'), render: (i) => date(i.created_at) },
    { key: 'logs', header: t('deploy.logs'), width: 90, render: (i) => <RowButton onClick={() => setLogOf(i)} disabled={!i.worker_id}>{t('deploy.logs')}</RowButton> },
  ], [t, bytes, date]);
  if (model.error) {
    return model.error instanceof ApiError && model.error.status === 404 ? <Alert color="gray">{t('deploy.notFound')}</Alert> : <ErrorAlert error={model.error} />;
  }
  if (!live) return <Text>{t('common.loading')}</Text>;
  const canEdit = perms.can('member', live.project_id);
  const scale = async () => {
    setScaleError(undefined);
    try {
      await api('PATCH', `/v2/models/${live.id}`, { replicas: Number(replicas) });
      qc.invalidateQueries({ queryKey: ['model', id] });
    } catch (e) {
      setScaleError(e instanceof ApiError ? e.message : String(e));
    }
  };
  const remove = async () => {
    try {
      await api('DELETE', `/v2/models/${live.id}`);
      navigate('/deployments');
    } catch (e) {
      setError(e);
      setConfirm(false);
    }
  };
  return (
    <Stack>
      <PageHeader title={live.name}>
        {canEdit && (
          <Button color="red" variant="light" c="#a61e1e" onClick={() => setConfirm(true)} data-testid="deploy-delete">
            {t('common.delete')}
          </Button>
        )}
      </PageHeader>
      <ErrorAlert error={error} />
      <SimpleGrid cols={{ base: 1, sm: 3 }}>
        <Paper withBorder p="md">
          <Text size="xs" c="dimmed">
            {t('deploy.ready')} / {t('deploy.replicas')}
          </Text>
          <Text fw={700} size="xl" data-testid="ready-replicas">
            {live.ready_replicas} / {live.replicas}
          </Text>
        </Paper>
        <Paper withBorder p="md">
          <Text size="xs" c="dimmed">
            {t('deploy.source')}
          </Text>
          <Text>{live.source.path ?? live.source.repo ?? `${live.source.type} ${live.source.params_b ?? ''}B`}</Text>
          <Text size="xs" c="dimmed">
            {t('deploy.backend')}: {live.backend || t('deploy.backendAuto')} {live.backend_version}
          </Text>
        </Paper>
        {canEdit && (
          <Paper withBorder p="md">
            <Group align="flex-end" wrap="nowrap">
              <NumberInput label={t('deploy.scaleTo')} value={replicas === '' ? live.replicas : replicas} onChange={setReplicas} min={0} error={scaleError} data-testid="scale-input" />
              <Button onClick={scale} data-testid="scale-apply">
                {t('deploy.scale')}
              </Button>
            </Group>
          </Paper>
        )}
      </SimpleGrid>
      <Title order={2} size="h3">
        {t('deploy.instances')}
      </Title>
      <VirtualTable
        label={t('deploy.instances')}
        rows={rows}
        rowKey={(i) => i.id}
        testId="instances-table"
        columns={columns}
      />
      {logOf && <LogViewer instance={logOf} onClose={() => setLogOf(undefined)} />}
      <Modal opened={confirm} onClose={() => setConfirm(false)} title={t('common.delete')}>
        <Text mb="md">{t('common.confirmDelete', { name: live.name })}</Text>
        <Group justify="flex-end">
          <Button variant="default" onClick={() => setConfirm(false)}>
            {t('common.cancel')}
          </Button>
          <Button color="red.9" onClick={remove} data-testid="deploy-delete-confirm">
            {t('common.delete')}
          </Button>
        </Group>
      </Modal>
    </Stack>
  );
}
