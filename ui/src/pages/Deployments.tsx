import { useEffect, useMemo, useState } from 'react';
import { Link, useNavigate } from 'react-router-dom';
import {
  Accordion,
  Alert,
  Anchor,
  Button,
  Checkbox,
  Group,
  List,
  Modal,
  NumberInput,
  Select,
  SimpleGrid,
  Stack,
  Table,
  Text,
  Textarea,
  TextInput,
} from '@mantine/core';
import { useQuery } from '@tanstack/react-query';
import { api, fieldErrors, formError, listAll, type Evaluation, type Model } from '../api';
import { usePermissions } from '../auth';
import { PageHeader, parsePairs, StateBadge, VirtualTable } from '../components';
import { deploymentState, useDeployments, useProjects } from '../hooks';
import { useI18n } from '../i18n';

interface Form {
  project_id: string;
  name: string;
  sourceType: string;
  path: string;
  repo: string;
  file: string;
  params_b: number | string;
  backend: string;
  backend_version: string;
  replicas: number | string;
  placement_strategy: string;
  gpu_type: string;
  worker_selector: string;
  gpus_per_replica: number | string;
  cpu_offloading: boolean;
  distributed: boolean;
  context_length: number | string;
  max_concurrent_sequences: number | string;
  gpu_compute_percent: number | string;
  extended_kv_cache: boolean;
  env: string;
  backend_parameters: string;
}

const num = (v: number | string) => (v === '' || v === undefined ? undefined : Number(v));

function body(f: Form) {
  const source: Record<string, unknown> = { type: f.sourceType };
  if (f.sourceType === 'local_path') source.path = f.path;
  if (f.sourceType === 'huggingface' || f.sourceType === 'modelscope') {
    source.repo = f.repo;
    if (f.file) source.file = f.file;
  }
  if (num(f.params_b) !== undefined && f.sourceType !== 'local_path') source.params_b = num(f.params_b);
  const b: Record<string, unknown> = {
    project_id: Number(f.project_id),
    name: f.name,
    source,
    replicas: num(f.replicas) ?? 1,
    placement_strategy: f.placement_strategy,
    cpu_offloading: f.cpu_offloading,
    distributed_inference_across_workers: f.distributed,
  };
  if (f.backend) b.backend = f.backend;
  if (f.backend_version) b.backend_version = f.backend_version;
  if (f.gpu_type) b.gpu_type = f.gpu_type;
  if (f.worker_selector.trim()) b.worker_selector = parsePairs(f.worker_selector);
  if (num(f.gpus_per_replica) !== undefined) b.gpu_selector = { gpus_per_replica: num(f.gpus_per_replica) };
  if (num(f.context_length) !== undefined) b.context_length = num(f.context_length);
  if (num(f.max_concurrent_sequences) !== undefined) b.max_concurrent_sequences = num(f.max_concurrent_sequences);
  if (num(f.gpu_compute_percent) !== undefined) b.gpu_compute_percent = num(f.gpu_compute_percent);
  if (f.extended_kv_cache) b.extended_kv_cache = { enabled: true };
  if (f.env.trim()) b.env = parsePairs(f.env);
  const params = f.backend_parameters.split('\n').map((s) => s.trim()).filter(Boolean);
  if (params.length) b.backend_parameters = params;
  return b;
}

// The form field a server message is about ("source.path must be absolute" → "path").
function fieldOf(f: string): string {
  if (f.startsWith('source.')) return f.slice(7);
  if (f.startsWith('gpu_selector')) return 'gpus_per_replica';
  if (f === 'distributed_inference_across_workers') return 'distributed';
  return f;
}
const FIELDS = ['project_id', 'name', 'type', 'path', 'repo', 'file', 'params_b', 'backend', 'backend_version', 'replicas', 'placement_strategy', 'gpu_type', 'worker_selector', 'gpus_per_replica', 'cpu_offloading', 'distributed', 'context_length', 'max_concurrent_sequences', 'gpu_compute_percent', 'extended_kv_cache', 'env', 'backend_parameters'];

function EvaluationView({ ev }: { ev: Evaluation }) {
  const { t, bytes, num } = useI18n();
  const serves = ev.serves;
  const perf = ev.performance;
  return (
    <Alert color={ev.fits ? 'green' : 'red'} title={ev.fits ? t('deploy.fits') : t('deploy.doesNotFit')} data-testid="evaluation" data-fits={ev.fits}>
      <Stack gap="xs">
        <Text size="sm">{ev.summary}</Text>
        {ev.engine && (
          <div data-testid="evaluation-engine" data-backend={ev.engine.backend}>
            <Text size="sm" fw={600}>
              {t('deploy.engine', { backend: ev.engine.backend, version: ev.engine.backend_version })}
              {ev.engine.automatic && ` · ${t('deploy.engineAutomatic')}`}
            </Text>
            <Text size="xs" c="dimmed">
              {ev.engine.reason}
            </Text>
          </div>
        )}
        {serves && serves.sequences != null && serves.context_length != null && (
          <Text size="sm" data-testid="evaluation-serves" data-sequences={serves.sequences}>
            {t(serves.target_sequences != null && serves.target_sequences > serves.sequences ? 'deploy.servesLowered' : 'deploy.serves', {
              sequences: num(serves.sequences),
              context: num(serves.context_length),
              target: num(serves.target_sequences ?? 0),
            })}
          </Text>
        )}
        {perf && (
          <div data-testid="evaluation-performance" data-available={perf.available} data-tps={perf.tokens_per_second_per_user ?? ''}>
            {perf.available ? (
              <>
                <Text size="sm">
                  {t('deploy.predicted', {
                    tps: num(perf.tokens_per_second_per_user ?? 0, 1),
                    ttft: num(perf.ttft_ms ?? 0),
                    users: num(perf.sequences ?? 1),
                    single: num(perf.single_user_tokens_per_second ?? 0, 1),
                  })}
                  {perf.extrapolated && ` · ${t('deploy.predictedExtrapolated')}`}
                </Text>
                <Text size="xs" c="dimmed">
                  {perf.basis}
                </Text>
              </>
            ) : (
              <Text size="xs" c="dimmed">
                {t('deploy.noPrediction', { reason: perf.reason ?? '' })}
              </Text>
            )}
          </div>
        )}
        {(ev.warnings ?? []).length > 0 && (
          <Alert color="yellow" title={t('deploy.warnings')} data-testid="evaluation-warnings" p="xs">
            <List size="sm">
              {ev.warnings!.map((w) => (
                <List.Item key={w}>{w}</List.Item>
              ))}
            </List>
          </Alert>
        )}
        {ev.placement && (
          <>
            <Text size="sm" data-testid="placement">
              {t('deploy.wouldRunOn', { worker: ev.placement.worker_name, gpus: ev.placement.gpu_indexes.join(', ') })}
            </Text>
            <Table>
              <Table.Thead>
                <Table.Tr>
                  <Table.Th>{t('gpu.id')}</Table.Th>
                  <Table.Th>{t('deploy.claimPerGpu')}</Table.Th>
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {Object.entries(ev.placement.vram).map(([g, v]) => (
                  <Table.Tr key={g} data-testid="claim-row">
                    <Table.Td>
                      {ev.placement!.worker_name}:{g}
                    </Table.Td>
                    <Table.Td>{bytes(v)}</Table.Td>
                  </Table.Tr>
                ))}
                {ev.placement.subordinates.flatMap((s) =>
                  Object.entries(s.vram).map(([g, v]) => (
                    <Table.Tr key={`${s.worker_name}:${g}`} data-testid="claim-row">
                      <Table.Td>
                        {s.worker_name}:{g}
                      </Table.Td>
                      <Table.Td>{bytes(v)}</Table.Td>
                    </Table.Tr>
                  )),
                )}
              </Table.Tbody>
            </Table>
          </>
        )}
        {Object.keys(ev.reasons).length > 0 && (
          <>
            <Text size="sm" fw={600}>
              {t('deploy.reasons')}
            </Text>
            <List size="sm" data-testid="reasons">
              {Object.entries(ev.reasons).map(([w, why]) => (
                <List.Item key={w} data-worker={w}>
                  <b>{w}</b>: {why}
                </List.Item>
              ))}
            </List>
          </>
        )}
      </Stack>
    </Alert>
  );
}

function CreateForm({ onClose }: { onClose: () => void }) {
  const { t } = useI18n();
  const navigate = useNavigate();
  const perms = usePermissions();
  const projects = useProjects();
  const backends = useQuery({ queryKey: ['backends'], queryFn: () => listAll<{ name: string }>('/v2/backends') });
  const writable = (projects.data ?? []).filter((p) => perms.can('member', p.id));
  const [f, setF] = useState<Form>({
    project_id: writable[0] ? String(writable[0].id) : '',
    name: '',
    sourceType: 'simulated',
    path: '',
    repo: '',
    file: '',
    params_b: 8,
    backend: '',
    backend_version: '',
    replicas: 1,
    placement_strategy: 'spread',
    gpu_type: '',
    worker_selector: '',
    gpus_per_replica: '',
    cpu_offloading: false,
    distributed: false,
    context_length: '',
    max_concurrent_sequences: '',
    gpu_compute_percent: '',
    extended_kv_cache: false,
    env: '',
    backend_parameters: '',
  });
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [ev, setEv] = useState<Evaluation>();
  // The projects may arrive after the form opened: default to the first writable one.
  useEffect(() => {
    if (!f.project_id && writable[0]) setF((old) => ({ ...old, project_id: String(writable[0].id) }));
  }, [f.project_id, writable]);
  const [busy, setBusy] = useState<'check' | 'create'>();
  const set = <K extends keyof Form>(k: K, v: Form[K]) => {
    setF((old) => ({ ...old, [k]: v }));
    setEv(undefined);
  };
  const run = async (what: 'check' | 'create') => {
    setBusy(what);
    setErrors({});
    try {
      if (what === 'check') {
        setEv(await api<Evaluation>('POST', '/v2/model-evaluations', body(f)));
      } else {
        const m = await api<Model>('POST', '/v2/models', body(f));
        onClose();
        navigate(`/deployments/${m.id}`);
      }
    } catch (e) {
      setErrors(fieldErrors(e, fieldOf));
    } finally {
      setBusy(undefined);
    }
  };
  const err = (k: string) => errors[k];
  const other = formError(errors, FIELDS);
  return (
    <Stack>
      <SimpleGrid cols={{ base: 1, sm: 2 }}>
        <Select label={t('common.project')} data={writable.map((p) => ({ value: String(p.id), label: p.name }))} value={f.project_id} onChange={(v) => set('project_id', v ?? '')} error={err('project_id')} allowDeselect={false} />
        <TextInput label={t('common.name')} value={f.name} onChange={(e) => set('name', e.currentTarget.value)} error={err('name')} data-testid="deploy-name" />
        <Select
          label={t('deploy.sourceType')}
          data={['simulated', 'local_path', 'huggingface', 'modelscope'].map((s) => ({ value: s, label: t(`deploy.src.${s}` as 'deploy.src.simulated') }))}
          value={f.sourceType}
          onChange={(v) => set('sourceType', v ?? 'simulated')}
          error={err('type')}
          allowDeselect={false}
          data-testid="deploy-source-type"
        />
        {f.sourceType === 'local_path' && <TextInput label={t('deploy.path')} value={f.path} onChange={(e) => set('path', e.currentTarget.value)} error={err('path')} placeholder="/models/qwen2.5-7b-instruct-q4_k_m.gguf" />}
        {(f.sourceType === 'huggingface' || f.sourceType === 'modelscope') && (
          <>
            <TextInput label={t('deploy.repo')} value={f.repo} onChange={(e) => set('repo', e.currentTarget.value)} error={err('repo')} placeholder="Qwen/Qwen2.5-7B-Instruct-GGUF" />
            <TextInput label={t('deploy.file')} value={f.file} onChange={(e) => set('file', e.currentTarget.value)} error={err('file')} />
          </>
        )}
        {f.sourceType !== 'local_path' && <NumberInput label={t('deploy.paramsB')} value={f.params_b} onChange={(v) => set('params_b', v)} error={err('params_b')} data-testid="deploy-params" />}
        <NumberInput label={t('deploy.replicas')} value={f.replicas} onChange={(v) => set('replicas', v)} error={err('replicas')} min={0} />
        <Select
          label={t('deploy.backend')}
          data={[{ value: '', label: t('deploy.backendAuto') }, ...(backends.data ?? []).map((b) => ({ value: b.name, label: b.name }))]}
          value={f.backend}
          onChange={(v) => set('backend', v ?? '')}
          error={err('backend')}
        />
        <TextInput label={t('deploy.backendVersion')} value={f.backend_version} onChange={(e) => set('backend_version', e.currentTarget.value)} error={err('backend_version')} />
      </SimpleGrid>
      <Accordion variant="contained">
        <Accordion.Item value="advanced">
          <Accordion.Control>{t('deploy.advanced')}</Accordion.Control>
          <Accordion.Panel>
            <SimpleGrid cols={{ base: 1, sm: 2 }}>
              <Select label={t('deploy.placement')} data={[{ value: 'spread', label: t('deploy.spread') }, { value: 'binpack', label: t('deploy.binpack') }]} value={f.placement_strategy} onChange={(v) => set('placement_strategy', v ?? 'spread')} allowDeselect={false} />
              <TextInput label={t('deploy.gpuType')} value={f.gpu_type} onChange={(e) => set('gpu_type', e.currentTarget.value)} error={err('gpu_type')} />
              <NumberInput label={t('deploy.gpusPerReplica')} value={f.gpus_per_replica} onChange={(v) => set('gpus_per_replica', v)} error={err('gpus_per_replica')} min={1} />
              <NumberInput label={t('deploy.contextLength')} value={f.context_length} onChange={(v) => set('context_length', v)} error={err('context_length')} />
              <NumberInput label={t('deploy.maxSeqs')} value={f.max_concurrent_sequences} onChange={(v) => set('max_concurrent_sequences', v)} error={err('max_concurrent_sequences')} />
              <NumberInput
                label={t('deploy.gpuComputePercent')}
                description={t('deploy.gpuComputePercentHint')}
                value={f.gpu_compute_percent}
                onChange={(v) => set('gpu_compute_percent', v)}
                error={err('gpu_compute_percent')}
                min={1}
                max={100}
                allowDecimal={false}
                data-testid="deploy-gpu-compute-percent"
              />
              <Textarea label={t('deploy.workerSelector')} value={f.worker_selector} onChange={(e) => set('worker_selector', e.currentTarget.value)} error={err('worker_selector')} autosize />
              <Textarea label={t('deploy.env')} value={f.env} onChange={(e) => set('env', e.currentTarget.value)} error={err('env')} autosize />
              <Textarea label={t('deploy.backendParams')} value={f.backend_parameters} onChange={(e) => set('backend_parameters', e.currentTarget.value)} error={err('backend_parameters')} autosize />
              <Checkbox label={t('deploy.cpuOffload')} checked={f.cpu_offloading} onChange={(e) => set('cpu_offloading', e.currentTarget.checked)} />
              <Checkbox label={t('deploy.distributed')} checked={f.distributed} onChange={(e) => set('distributed', e.currentTarget.checked)} />
              <Checkbox label={t('deploy.extendedKv')} checked={f.extended_kv_cache} onChange={(e) => set('extended_kv_cache', e.currentTarget.checked)} />
            </SimpleGrid>
          </Accordion.Panel>
        </Accordion.Item>
      </Accordion>
      {other && (
        <Alert color="red" role="alert">
          {other}
        </Alert>
      )}
      {ev ? <EvaluationView ev={ev} /> : <Text size="sm" c="dimmed">{t('deploy.checkFirst')}</Text>}
      <Group justify="flex-end">
        <Button variant="default" onClick={onClose}>
          {t('common.cancel')}
        </Button>
        <Button variant="light" onClick={() => run('check')} loading={busy === 'check'} disabled={!f.project_id} data-testid="deploy-check">
          {t('deploy.check')}
        </Button>
        <Button onClick={() => run('create')} loading={busy === 'create'} disabled={!ev?.fits} data-testid="deploy-create">
          {t('common.create')}
        </Button>
      </Group>
    </Stack>
  );
}

export default function Deployments() {
  const { t, date } = useI18n();
  const perms = usePermissions();
  const models = useDeployments();
  const projects = useProjects();
  const [creating, setCreating] = useState(false);
  const projectName = useMemo(() => new Map((projects.data ?? []).map((p) => [p.id, p.name])), [projects.data]);
  const rows = [...models.items].sort((a, b) => a.id - b.id);
  return (
    <Stack>
      <PageHeader title={t('deploy.title')}>
        {perms.canAny('member') && (
          <Button onClick={() => setCreating(true)} data-testid="deploy-new">
            {t('deploy.new')}
          </Button>
        )}
      </PageHeader>
      <VirtualTable
        label={t('deploy.title')}
        rows={rows}
        rowKey={(m) => m.id}
        testId="deployments-table"
        columns={[
          { key: 'name', header: t('common.name'), render: (m) => <Anchor component={Link} to={`/deployments/${m.id}`}>{m.name}</Anchor> },
          { key: 'project', header: t('common.project'), render: (m) => projectName.get(m.project_id) ?? m.project_id },
          { key: 'ready', header: `${t('deploy.ready')} / ${t('deploy.replicas')}`, width: 130, render: (m) => <span data-testid="ready">{`${m.ready_replicas} / ${m.replicas}`}</span> },
          { key: 'state', header: t('common.state'), width: 120, render: (m) => <StateBadge state={deploymentState(m)} /> },
          { key: 'source', header: t('deploy.source'), render: (m) => m.source.path ?? m.source.repo ?? `${m.source.type} ${m.source.params_b ?? ''}B` },
          { key: 'backend', header: t('deploy.backend'), width: 120, render: (m) => m.backend || t('deploy.backendAuto') },
          { key: 'created', header: t('common.created'), render: (m) => date(m.created_at) },
        ]}
      />
      <Modal opened={creating} onClose={() => setCreating(false)} title={t('deploy.new')} size="xl">
        {creating && <CreateForm onClose={() => setCreating(false)} />}
      </Modal>
    </Stack>
  );
}
