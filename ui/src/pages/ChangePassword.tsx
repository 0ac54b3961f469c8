import { useState } from 'react';
import { Alert, Button, Center, Paper, PasswordInput, Stack, Title } from '@mantine/core';
import { useQueryClient } from '@tanstack/react-query';
import { api, ApiError, type User } from '../api';
import { useI18n } from '../i18n';

export function ChangePassword({ forced = false }: { forced?: boolean }) {
  const { t } = useI18n();
  const qc = useQueryClient();
  const [oldPassword, setOld] = useState('');
  const [newPassword, setNew] = useState('');
  const [confirm, setConfirm] = useState('');
  const [error, setError] = useState<string>();
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setError(undefined);
    setDone(false);
    if (newPassword !== confirm) {
      setError(t('auth.mismatch'));
      return;
    }
    setBusy(true);
    try {
      await api('POST', '/v2/auth/change-password', { old_password: oldPassword, new_password: newPassword });
      setDone(true);
      setOld('');
      setNew('');
      setConfirm('');
      qc.setQueryData(['me'], await api<User>('GET', '/v2/users/me'));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  const form = (
    <Paper withBorder p="xl" w={420} maw="100%">
      <form onSubmit={submit}>
        <Stack>
          <Title order={1} size="h3">
            {t('auth.changePassword')}
          </Title>
          {forced && <Alert color="yellow">{t('auth.mustChange')}</Alert>}
          <PasswordInput label={t('auth.oldPassword')} value={oldPassword} onChange={(e) => setOld(e.currentTarget.value)} autoComplete="current-password" required />
          <PasswordInput label={t('auth.newPassword')} value={newPassword} onChange={(e) => setNew(e.currentTarget.value)} autoComplete="new-password" required error={error && error !== t('auth.mismatch') ? error : undefined} />
          <PasswordInput label={t('auth.confirmPassword')} value={confirm} onChange={(e) => setConfirm(e.currentTarget.value)} autoComplete="new-password" required error={error === t('auth.mismatch') ? error : undefined} />
          {done && (
            <Alert color="green" role="status">
              {t('auth.changed')}
            </Alert>
          )}
          <Button type="submit" loading={busy}>
            {t('auth.changePassword')}
          </Button>
        </Stack>
      </form>
    </Paper>
  );
  return forced ? (
    <Center mih="100vh" p="md" component="main">
      {form}
    </Center>
  ) : (
    form
  );
}
