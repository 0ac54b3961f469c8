import { useState } from 'react';
import { Alert, Button, Group, Modal, NumberInput, Select, Stack, Table, Text, TextInput } from '@mantine/core';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { api, ApiError, fieldErrors, formError, listAll, type Project } from '../api';
import { usePermissions } from '../auth';
import { PageHeader, RowButton, VirtualTable } from '../components';
import { useProjects } from '../hooks';
import { useI18n } from '../i18n';

interface Member {
  user_id: number;
  username: string;
  role: string;
}

function Members({ project }: { project: Project }) {
  const { t } = useI18n();
  const perms = usePermissions();
  const qc = useQueryClient();
  const members = useQuery({ queryKey: ['members', project.id], queryFn: () => listAll<Member>(`/v2/projects/${project.id}/members`) });
  const [username, setUsername] = useState('');
  const [role, setRole] = useState('member');
  const [error, setError] = useState<string>();
  const canEdit = perms.can('project-admin', project.id);
  const add = async () => {
    setError(undefined);
    try {
      await api('POST', `/v2/projects/${project.id}/members`, { username, role });
      setUsername('');
      qc.invalidateQueries({ queryKey: ['members', project.id] });
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    }
  };
  return (
    <Stack>
      <Table>
        <Table.Thead>
          <Table.Tr>
            <Table.Th>{t('auth.username')}</Table.Th>
            <Table.Th>{t('common.role')}</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {(members.data ?? []).map((m) => (
            <Table.Tr key={m.user_id}>
              <Table.Td>{m.username ?? m.user_id}</Table.Td>
              <Table.Td>{t(`role.${m.role}` as 'role.member')}</Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {canEdit && (
        <Group align="flex-end">
          <TextInput label={t('auth.username')} value={username} onChange={(e) => setUsername(e.currentTarget.value)} error={error} />
          <Select label={t('common.role')} value={role} onChange={(v) => setRole(v ?? 'member')} data={['project-admin', 'member', 'viewer'].map((r) => ({ value: r, label: t(`role.${r}` as 'role.member') }))} allowDeselect={false} />
          <Button onClick={add}>{t('projects.addMember')}</Button>
        </Group>
      )}
    </Stack>
  );
}

function CreateProject({ onDone }: { onDone: () => void }) {
  const { t } = useI18n();
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const [maxGpus, setMaxGpus] = useState<number | string>('');
  const [maxVram, setMaxVram] = useState<number | string>('');
  const [maxInstances, setMaxInstances] = useState<number | string>('');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setErrors({});
    const body: Record<string, unknown> = { name, description };
    if (maxGpus !== '') body.max_gpus = Number(maxGpus);
    if (maxVram !== '') body.max_vram_gib = Number(maxVram);
    if (maxInstances !== '') body.max_instances = Number(maxInstances);
    try {
      await api('POST', '/v2/projects', body);
      onDone();
    } catch (err) {
      setErrors(fieldErrors(err));
    }
  };
  const other = formError(errors, ['name', 'description', 'max_gpus', 'max_vram_gib', 'max_instances']);
  return (
    <form onSubmit={submit}>
      <Stack>
        <TextInput label={t('common.name')} value={name} onChange={(e) => setName(e.currentTarget.value)} error={errors.name} data-testid="project-name" />
        <TextInput label={t('common.description')} value={description} onChange={(e) => setDescription(e.currentTarget.value)} error={errors.description} />
        <NumberInput label={t('projects.maxGpus')} value={maxGpus} onChange={setMaxGpus} error={errors.max_gpus} data-testid="project-max-gpus" />
        <NumberInput label={t('projects.maxVram')} value={maxVram} onChange={setMaxVram} error={errors.max_vram_gib} />
        <NumberInput label={t('projects.maxInstances')} value={maxInstances} onChange={setMaxInstances} error={errors.max_instances} />
        {other && <Alert color="red">{other}</Alert>}
        <Group justify="flex-end">
          <Button type="submit" data-testid="project-create">{t('common.create')}</Button>
        </Group>
      </Stack>
    </form>
  );
}

export default function Projects() {
  const { t, num, date } = useI18n();
  const perms = usePermissions();
  const qc = useQueryClient();
  const projects = useProjects();
  const [open, setOpen] = useState<Project>();
  const [creating, setCreating] = useState(false);
  const q = (v: number | null) => (v === null || v === undefined ? t('projects.unlimited') : num(v));
  return (
    <Stack>
      <PageHeader title={t('projects.title')}>
        {perms.isAdmin && <Button onClick={() => setCreating(true)} data-testid="project-new">{t('projects.new')}</Button>}
      </PageHeader>
      <VirtualTable
        label={t('projects.title')}
        rows={projects.data ?? []}
        rowKey={(p) => p.id}
        columns={[
          { key: 'name', header: t('common.name'), render: (p) => <b>{p.name}</b> },
          { key: 'desc', header: t('common.description'), render: (p) => p.description || '—' },
          { key: 'gpus', header: t('projects.maxGpus'), width: 110, render: (p) => q(p.max_gpus) },
          { key: 'vram', header: t('projects.maxVram'), width: 150, render: (p) => q(p.max_vram_gib) },
          { key: 'inst', header: t('projects.maxInstances'), width: 120, render: (p) => q(p.max_instances) },
          { key: 'role', header: t('common.role'), width: 130, render: (p) => (perms.role(p.id) ? t(`role.${perms.role(p.id)!}` as 'role.member') : perms.isAdmin ? t('role.admin') : '—') },
          { key: 'created', header: t('common.created'), render: (p) => date(p.created_at) },
          { key: 'members', header: t('projects.members'), width: 110, render: (p) => <RowButton onClick={() => setOpen(p)}>{t('projects.members')}</RowButton> },
        ]}
      />
      <Modal opened={!!open} onClose={() => setOpen(undefined)} title={`${t('projects.members')}: ${open?.name ?? ''}`} size="lg">
        {open && <Members project={open} />}
        {open?.limits && <Text size="sm" mt="md">{t('projects.limits')}: <span className="mono">{JSON.stringify(open.limits)}</span></Text>}
      </Modal>
      <Modal opened={creating} onClose={() => setCreating(false)} title={t('projects.new')}>
        {creating && <CreateProject onDone={() => { setCreating(false); qc.invalidateQueries({ queryKey: ['projects'] }); }} />}
      </Modal>
    </Stack>
  );
}
