import { useEffect, useMemo, useState } from 'react';
import { Alert, Button, Code, CopyButton, Group, Modal, NumberInput, Select, Stack, TextInput } from '@mantine/core';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { api, fieldErrors, formError, listAll, type ApiKey } from '../api';
import { usePermissions } from '../auth';
import { ErrorAlert, PageHeader, RowButton, StateBadge, VirtualTable } from '../components';
import { rfc3339, useProjects } from '../hooks';
import { useI18n } from '../i18n';

function CreateKey({ onDone }: { onDone: (k: ApiKey) => void }) {
  const { t } = useI18n();
  const perms = usePermissions();
  const projects = useProjects();
  const writable = (projects.data ?? []).filter((p) => perms.can('member', p.id));
  const [projectId, setProjectId] = useState(writable[0] ? String(writable[0].id) : '');
  const [name, setName] = useState('');
  const [scope, setScope] = useState('inference');
  const [models, setModels] = useState('');
  const [days, setDays] = useState<number | string>('');
  const [rpm, setRpm] = useState<number | string>('');
  const [cidrs, setCidrs] = useState('');
  const [errors, setErrors] = useState<Record<string, string>>({});
  useEffect(() => {
    if (!projectId && writable[0]) setProjectId(String(writable[0].id));
  }, [projectId, writable]);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setErrors({});
    const body: Record<string, unknown> = { name, project_id: Number(projectId), scope };
    const list = models.split(',').map((s) => s.trim()).filter(Boolean);
    body.allowed_models = list.length ? list : '*';
    if (days !== '') body.expires_at = rfc3339(new Date(Date.now() + Number(days) * 86400_000));
    if (rpm !== '') body.limits = { requests_per_minute: Number(rpm) };
    const ranges = cidrs.split(',').map((s) => s.trim()).filter(Boolean);
    if (ranges.length) body.allowed_cidrs = ranges;
    try {
      onDone(await api<ApiKey>('POST', '/v2/api-keys', body));
    } catch (err) {
      setErrors(fieldErrors(err, (f) => (f.startsWith('limits') ? 'limits' : f.startsWith('allowed_cidrs') ? 'allowed_cidrs' : f)));
    }
  };
  const other = formError(errors, ['name', 'project_id', 'scope', 'allowed_models', 'expires_at', 'limits', 'allowed_cidrs']);
  return (
    <form onSubmit={submit}>
      <Stack>
        <Select label={t('common.project')} data={writable.map((p) => ({ value: String(p.id), label: p.name }))} value={projectId} onChange={(v) => setProjectId(v ?? '')} error={errors.project_id} allowDeselect={false} />
        <TextInput label={t('common.name')} value={name} onChange={(e) => setName(e.currentTarget.value)} error={errors.name} data-testid="key-name" />
        <Select label={t('keys.scope')} data={['inference', 'management', 'all'].map((s) => ({ value: s, label: t(`keys.scope.${s}` as 'keys.scope.all') }))} value={scope} onChange={(v) => setScope(v ?? 'inference')} error={errors.scope} allowDeselect={false} />
        <TextInput label={t('keys.allowedModels')} value={models} onChange={(e) => setModels(e.currentTarget.value)} error={errors.allowed_models} />
        <NumberInput label={t('keys.expiresDays')} value={days} onChange={setDays} min={1} error={errors.expires_at} />
        <NumberInput label={t('keys.rpm')} value={rpm} onChange={setRpm} error={errors.limits} />
        <TextInput label={t('keys.allowedCidrs')} placeholder="10.0.0.0/8, 2001:db8::/32" value={cidrs} onChange={(e) => setCidrs(e.currentTarget.value)} error={errors.allowed_cidrs} data-testid="key-cidrs" />
        {other && <Alert color="red" role="alert">{other}</Alert>}
        <Group justify="flex-end">
          <Button type="submit" disabled={!projectId} data-testid="key-create">
            {t('common.create')}
          </Button>
        </Group>
      </Stack>
    </form>
  );
}

export default function ApiKeys() {
  const { t, ago, date } = useI18n();
  const perms = usePermissions();
  const qc = useQueryClient();
  const keys = useQuery({ queryKey: ['api-keys'], queryFn: () => listAll<ApiKey>('/v2/api-keys') });
  const projects = useProjects();
  const projectName = useMemo(() => new Map((projects.data ?? []).map((p) => [p.id, p.name])), [projects.data]);
  const [creating, setCreating] = useState(false);
  const [secret, setSecret] = useState<ApiKey>();
  const [error, setError] = useState<unknown>();
  const revoke = async (k: ApiKey) => {
    setError(undefined);
    try {
      await api('DELETE', `/v2/api-keys/${k.id}`);
    } catch (e) {
      setError(e);
    }
    qc.invalidateQueries({ queryKey: ['api-keys'] });
  };
  const rows = [...(keys.data ?? [])].sort((a, b) => b.id - a.id);
  return (
    <Stack>
      <PageHeader title={t('keys.title')}>
        {perms.canAny('member') && (
          <Button onClick={() => setCreating(true)} data-testid="key-new">
            {t('keys.new')}
          </Button>
        )}
      </PageHeader>
      <ErrorAlert error={error ?? keys.error} />
      <VirtualTable
        label={t('keys.title')}
        rows={rows}
        rowKey={(k) => k.id}
        testId="keys-table"
        columns={[
          { key: 'name', header: t('common.name'), render: (k) => k.name },
          { key: 'project', header: t('common.project'), render: (k) => projectName.get(k.project_id) ?? k.project_id },
          { key: 'prefix', header: t('keys.prefix'), render: (k) => <span className="mono">{k.prefix}…</span> },
          { key: 'scope', header: t('keys.scope'), width: 110, render: (k) => t(`keys.scope.${k.scope}` as 'keys.scope.all') },
          { key: 'state', header: t('common.state'), width: 110, render: (k) => <StateBadge state={k.revoked_at ? t('keys.revoked') : t('keys.active')} /> },
          { key: 'cidrs', header: t('keys.cidrs'), render: (k) => (k.allowed_cidrs ? <span className="mono" title={k.allowed_cidrs.join(', ')}>{k.allowed_cidrs.join(', ')}</span> : t('keys.anyAddress')) },
          { key: 'used', header: t('keys.lastUsed'), render: (k) => ago(k.last_used_at) },
          { key: 'expires', header: t('keys.expiresAt'), render: (k) => (k.expires_at ? date(k.expires_at) : t('common.never')) },
          {
            key: 'actions',
            header: t('common.actions'),
            width: 100,
            render: (k) =>
              !k.revoked_at && perms.can('member', k.project_id) ? (
                <RowButton danger onClick={() => revoke(k)} data-testid="key-revoke">
                  {t('keys.revoke')}
                </RowButton>
              ) : null,
          },
        ]}
      />
      <Modal opened={creating} onClose={() => setCreating(false)} title={t('keys.new')}>
        {creating && (
          <CreateKey
            onDone={(k) => {
              setCreating(false);
              setSecret(k);
              qc.invalidateQueries({ queryKey: ['api-keys'] });
            }}
          />
        )}
      </Modal>
      <Modal opened={!!secret} onClose={() => setSecret(undefined)} title={secret?.name}>
        <Stack>
          <Alert color="yellow">{t('keys.secretOnce')}</Alert>
          <Code block data-testid="key-secret">
            {secret?.secret}
          </Code>
          <Group justify="flex-end">
            <CopyButton value={secret?.secret ?? ''}>
              {({ copied, copy }) => (
                <Button onClick={copy} variant="light">
                  {copied ? t('common.copied') : t('common.copy')}
                </Button>
              )}
            </CopyButton>
            <Button onClick={() => setSecret(undefined)} data-testid="key-secret-close">
              {t('common.close')}
            </Button>
          </Group>
        </Stack>
      </Modal>
    </Stack>
  );
}
