import { lazy, Suspense, useState, type ReactNode } from 'react';
import { Navigate, NavLink, Route, Routes, useLocation, useNavigate } from 'react-router-dom';
import {
  AppShell,
  Burger,
  Center,
  Group,
  Loader,
  Menu,
  NavLink as MantineNavLink,
  Text,
  UnstyledButton,
} from '@mantine/core';
import { useQueryClient } from '@tanstack/react-query';
import { api } from './api';
import { useMe, usePermissions } from './auth';
import { LanguageSwitch } from './components';
import { useI18n, type MessageKey } from './i18n';
import { Login } from './pages/Login';
import { ChangePassword } from './pages/ChangePassword';

const Dashboard = lazy(() => import('./pages/Dashboard'));
const Workers = lazy(() => import('./pages/Workers'));
const Deployments = lazy(() => import('./pages/Deployments'));
const DeploymentDetail = lazy(() => import('./pages/DeploymentDetail'));
const ApiKeys = lazy(() => import('./pages/ApiKeys'));
const Playground = lazy(() => import('./pages/Playground'));
const Projects = lazy(() => import('./pages/Projects'));
const Users = lazy(() => import('./pages/Users'));
const Usage = lazy(() => import('./pages/Usage'));
const ModelRoutes = lazy(() => import('./pages/ModelRoutes'));
const Backends = lazy(() => import('./pages/Backends'));
const ModelFiles = lazy(() => import('./pages/ModelFiles'));

const NAV: { to: string; key: MessageKey; admin?: boolean }[] = [
  { to: '/', key: 'nav.dashboard' },
  { to: '/workers', key: 'nav.workers' },
  { to: '/deployments', key: 'nav.deployments' },
  { to: '/playground', key: 'nav.playground' },
  { to: '/api-keys', key: 'nav.apiKeys' },
  { to: '/usage', key: 'nav.usage' },
  { to: '/routes', key: 'nav.routes' },
  { to: '/model-files', key: 'nav.modelFiles' },
  { to: '/backends', key: 'nav.backends' },
  { to: '/projects', key: 'nav.projects' },
  { to: '/users', key: 'nav.users', admin: true },
];

function Loading() {
  const { t } = useI18n();
  return (
    <Center h={200} aria-label={t('common.loading')}>
      <Loader />
    </Center>
  );
}

function Shell({ children }: { children: ReactNode }) {
  const { t } = useI18n();
  const { data: me } = useMe();
  const perms = usePermissions();
  const [opened, setOpened] = useState(false);
  const qc = useQueryClient();
  const location = useLocation();
  const navigate = useNavigate();
  const signOut = async () => {
    try {
      await api('POST', '/v2/auth/logout');
    } finally {
      // Forget everything the session saw; the observers of "me" switch to the sign-in page.
      qc.removeQueries({ predicate: (q) => q.queryKey[0] !== 'me' });
      qc.setQueryData(['me'], null);
      navigate('/');
    }
  };
  return (
    <AppShell
      header={{ height: 52 }}
      navbar={{ width: 220, breakpoint: 'sm', collapsed: { mobile: !opened } }}
      padding="md"
    >
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between" wrap="nowrap">
          <Group gap="xs" wrap="nowrap">
            <Burger opened={opened} onClick={() => setOpened((o) => !o)} hiddenFrom="sm" size="sm" aria-label={t('nav.menu')} />
            <Text fw={700} size="lg" c="indigo.7">
              segma
            </Text>
          </Group>
          <Group gap="sm" wrap="nowrap">
            <LanguageSwitch />
            <Menu position="bottom-end">
              <Menu.Target>
                <UnstyledButton data-testid="user-menu" aria-label={t('auth.signedInAs', { name: me?.username ?? '' })}>
                  <Text size="sm" fw={500}>
                    {me?.username}
                  </Text>
                </UnstyledButton>
              </Menu.Target>
              <Menu.Dropdown>
                <Menu.Label>{perms.isAdmin ? t('role.admin') : me?.full_name || me?.username}</Menu.Label>
                <Menu.Item component={NavLink} to="/account/password">
                  {t('auth.changePassword')}
                </Menu.Item>
                <Menu.Item onClick={signOut} data-testid="sign-out">
                  {t('auth.signOut')}
                </Menu.Item>
              </Menu.Dropdown>
            </Menu>
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs" aria-label={t('nav.menu')}>
        {NAV.filter((n) => !n.admin || perms.isAdmin).map((n) => (
          <MantineNavLink
            key={n.to}
            component={NavLink}
            to={n.to}
            label={t(n.key)}
            active={n.to === '/' ? location.pathname === '/' : location.pathname.startsWith(n.to)}
            onClick={() => setOpened(false)}
          />
        ))}
      </AppShell.Navbar>
      <AppShell.Main>
        <Suspense fallback={<Loading />}>{children}</Suspense>
      </AppShell.Main>
    </AppShell>
  );
}

export function App() {
  const { t } = useI18n();
  const me = useMe();
  if (me.isLoading) return <Loading />;
  if (!me.data) return <Login />;
  if (me.data.require_password_change) return <ChangePassword forced />;
  return (
    <Shell>
      <Routes>
        <Route path="/" element={<Dashboard />} />
        <Route path="/workers" element={<Workers />} />
        <Route path="/deployments" element={<Deployments />} />
        <Route path="/deployments/:id" element={<DeploymentDetail />} />
        <Route path="/api-keys" element={<ApiKeys />} />
        <Route path="/playground" element={<Playground />} />
        <Route path="/projects" element={<Projects />} />
        <Route path="/users" element={<Users />} />
        <Route path="/usage" element={<Usage />} />
        <Route path="/routes" element={<ModelRoutes />} />
        <Route path="/backends" element={<Backends />} />
        <Route path="/model-files" element={<ModelFiles />} />
        <Route path="/account/password" element={<ChangePassword />} />
        <Route path="/login" element={<Navigate to="/" replace />} />
        <Route path="*" element={<Text>{t('notFound')}</Text>} />
      </Routes>
    </Shell>
  );
}
