import { useState } from 'react';
import { Alert, Button, Center, Group, Paper, PasswordInput, Stack, Text, TextInput, Title } from '@mantine/core';
import { useQueryClient } from '@tanstack/react-query';
import { api, ApiError, type User } from '../api';
import { LanguageSwitch } from '../components';
import { useI18n } from '../i18n';

export function Login() {
  const { t } = useI18n();
  const qc = useQueryClient();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await api('POST', '/v2/auth/login', { username, password });
      qc.setQueryData(['me'], await api<User>('GET', '/v2/users/me'));
    } catch (err) {
      if (err instanceof ApiError && err.status === 429) {
        // Locked out (too many failed sign-ins): say when, in the reader's language.
        setError(t('auth.lockedOut', { minutes: Math.max(1, Math.ceil((err.retryAfter ?? 60) / 60)) }));
      } else {
        setError(err instanceof ApiError ? err.message : String(err));
      }
    } finally {
      setBusy(false);
    }
  };
  return (
    <Center mih="100vh" p="md" component="main">
      <Paper withBorder shadow="sm" p="xl" w={380} maw="100%">
        <form onSubmit={submit}>
          <Stack>
            <Group justify="space-between">
              <Text fw={700} size="xl" c="indigo.7">
                segma
              </Text>
              <LanguageSwitch />
            </Group>
            <div>
              <Title order={1} size="h3">
                {t('auth.welcome')}
              </Title>
              <Text size="sm" c="dimmed">
                {t('auth.subtitle')}
              </Text>
            </div>
            <TextInput label={t('auth.username')} value={username} onChange={(e) => setUsername(e.currentTarget.value)} autoComplete="username" required autoFocus name="username" />
            <PasswordInput label={t('auth.password')} value={password} onChange={(e) => setPassword(e.currentTarget.value)} autoComplete="current-password" required name="password" />
            {error && (
              <Alert color="red" role="alert" data-testid="login-error">
                {error}
              </Alert>
            )}
            <Button type="submit" loading={busy}>
              {t('auth.signIn')}
            </Button>
          </Stack>
        </form>
      </Paper>
    </Center>
  );
}
