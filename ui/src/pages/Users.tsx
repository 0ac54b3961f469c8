import { useState } from 'react';
import { Alert, Button, Checkbox, Group, Modal, PasswordInput, Stack, TextInput } from '@mantine/core';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { api, fieldErrors, formError, listAll, type User } from '../api';
import { PageHeader, VirtualTable } from '../components';
import { useI18n } from '../i18n';

function CreateUser({ onDone }: { onDone: () => void }) {
  const { t } = useI18n();
  const [f, setF] = useState({ username: '', password: '', full_name: '', is_admin: false, require_password_change: true });
  const [errors, setErrors] = useState<Record<string, string>>({});
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setErrors({});
    try {
      await api('POST', '/v2/users', f);
      onDone();
    } catch (err) {
      setErrors(fieldErrors(err));
    }
  };
  const other = formError(errors, ['username', 'password', 'full_name']);
  return (
    <form onSubmit={submit}>
      <Stack>
        <TextInput label={t('auth.username')} value={f.username} onChange={(e) => setF({ ...f, username: e.currentTarget.value })} error={errors.username} data-testid="user-name" />
        <PasswordInput label={t('auth.password')} value={f.password} onChange={(e) => setF({ ...f, password: e.currentTarget.value })} error={errors.password} data-testid="user-password" />
        <TextInput label={t('users.fullName')} value={f.full_name} onChange={(e) => setF({ ...f, full_name: e.currentTarget.value })} error={errors.full_name} />
        <Checkbox label={t('users.admin')} checked={f.is_admin} onChange={(e) => setF({ ...f, is_admin: e.currentTarget.checked })} />
        <Checkbox label={t('users.requireChange')} checked={f.require_password_change} onChange={(e) => setF({ ...f, require_password_change: e.currentTarget.checked })} />
        {other && <Alert color="red">{other}</Alert>}
        <Group justify="flex-end">
          <Button type="submit" data-testid="user-create">{t('common.create')}</Button>
        </Group>
      </Stack>
    </form>
  );
}

export default function Users() {
  const { t, date } = useI18n();
  const qc = useQueryClient();
  const users = useQuery({ queryKey: ['users'], queryFn: () => listAll<User>('/v2/users') });
  const [creating, setCreating] = useState(false);
  const yes = (b: boolean) => (b ? t('common.yes') : t('common.no'));
  return (
    <Stack>
      <PageHeader title={t('users.title')}>
        <Button onClick={() => setCreating(true)} data-testid="user-new">{t('users.new')}</Button>
      </PageHeader>
      <VirtualTable
        label={t('users.title')}
        rows={users.data ?? []}
        rowKey={(u) => u.id}
        columns={[
          { key: 'username', header: t('auth.username'), render: (u) => <b>{u.username}</b> },
          { key: 'full', header: t('users.fullName'), render: (u) => u.full_name || '—' },
          { key: 'admin', header: t('users.admin'), width: 90, render: (u) => yes(u.is_admin) },
          { key: 'active', header: t('users.active'), width: 90, render: (u) => yes(u.is_active) },
          { key: 'change', header: t('users.requireChange'), width: 160, render: (u) => yes(u.require_password_change) },
          { key: 'created', header: t('common.created'), render: (u) => date(u.created_at) },
        ]}
      />
      <Modal opened={creating} onClose={() => setCreating(false)} title={t('users.new')}>
        {creating && <CreateUser onDone={() => { setCreating(false); qc.invalidateQueries({ queryKey: ['users'] }); }} />}
      </Modal>
    </Stack>
  );
}
