import { useMemo } from 'react';
import { Link } from 'react-router-dom';
import { Anchor, Group, Paper, SimpleGrid, Stack, Table, Text, Title } from '@mantine/core';
import { type UsageRow } from '../api';
import { PageHeader, StatCard, StateBadge, VramBar } from '../components';
import { daysAgo, deploymentState, useDeployments, useProjects, useUsage, useWorkersAndGpus } from '../hooks';
import { useI18n } from '../i18n';

function countBy<T>(items: T[], key: (t: T) => string): [string, number][] {
  const m = new Map<string, number>();
  for (const i of items) m.set(key(i), (m.get(key(i)) ?? 0) + 1);
  return [...m.entries()].sort();
}

// The dashboard shows this many GPU cards; a pool of thousands is listed on the Workers page
// (virtualised), so the overview stays as quick with 10,000 GPUs as with 8.
const MAX_GPU_CARDS = 32;

const tokens = (r: UsageRow) => r.prompt_tokens + r.completion_tokens;
const sum = (rows: UsageRow[] | undefined, f: (r: UsageRow) => number) => (rows ?? []).reduce((a, r) => a + f(r), 0);

function Top({ title, rows, name }: { title: string; rows: UsageRow[]; name: (k: string) => string }) {
  const { num, t } = useI18n();
  // The row with an empty key holds GPU time that has no model or key (docs/api.md "Usage").
  const top = [...rows].filter((r) => r.key !== '' || r.requests > 0).sort((a, b) => tokens(b) - tokens(a)).slice(0, 5);
  return (
    <Paper withBorder p="md">
      <Title order={2} size="h5" mb="xs">
        {title}
      </Title>
      {top.length === 0 ? (
        <Text c="dimmed" size="sm">
          {t('common.empty')}
        </Text>
      ) : (
        <Table>
          <Table.Tbody>
            {top.map((r) => (
              <Table.Tr key={r.key}>
                <Table.Td>{name(r.key)}</Table.Td>
                <Table.Td ta="right">{num(tokens(r))}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      )}
    </Paper>
  );
}

export default function Dashboard() {
  const { t, num } = useI18n();
  const { workers, gpus } = useWorkersAndGpus();
  const models = useDeployments();
  const projects = useProjects();
  const today = useUsage('project', daysAgo(0));
  const week = useUsage('project', daysAgo(7));
  const month = useUsage('project', daysAgo(30));
  const byModel = useUsage('model', daysAgo(30));
  const projectName = useMemo(() => {
    const m = new Map((projects.data ?? []).map((p) => [String(p.id), p.name]));
    return (k: string) => m.get(k) ?? k;
  }, [projects.data]);
  const deployStates = countBy(models.items, deploymentState);
  return (
    <Stack>
      <PageHeader title={t('dash.title')} />
      <SimpleGrid cols={{ base: 1, xs: 2, md: 4 }}>
        <StatCard testId="stat-workers" label={t('dash.workers')} value={
          <Group gap={6}>
            {num(workers.items.length)}
            {countBy(workers.items, (w) => w.state).map(([s, n]) => (
              <StateBadge key={s} state={s} label={`${s} ${n}`} />
            ))}
          </Group>
        } />
        <StatCard testId="stat-gpus" label={t('dash.gpus')} value={num(gpus.length)} />
        <StatCard testId="stat-deployments" label={t('dash.deployments')} value={
          <Group gap={6}>
            {num(models.items.length)}
            {deployStates.map(([s, n]) => (
              <StateBadge key={s} state={s} label={`${s} ${n}`} />
            ))}
          </Group>
        } />
        <StatCard testId="stat-tokens-today" label={`${t('dash.tokens')} · ${t('dash.usageToday')}`} value={num(sum(today.data, tokens))} />
      </SimpleGrid>
      <SimpleGrid cols={{ base: 1, sm: 3 }}>
        {([
          ['dash.usageToday', today.data],
          ['dash.usage7', week.data],
          ['dash.usage30', month.data],
        ] as const).map(([k, rows]) => (
          <Paper withBorder p="md" key={k}>
            <Text size="sm" fw={600}>
              {t(k)}
            </Text>
            <Text size="sm">
              {t('dash.tokens')}: <b>{num(sum(rows, tokens))}</b> · {t('dash.requests')}: <b>{num(sum(rows, (r) => r.requests))}</b>
            </Text>
          </Paper>
        ))}
      </SimpleGrid>
      <Title order={2} size="h4">
        {t('dash.gpus')}
      </Title>
      <SimpleGrid cols={{ base: 1, md: 2 }} data-testid="gpu-cards">
        {gpus.slice(0, MAX_GPU_CARDS).map((g) => (
          <Paper withBorder p="md" key={g.id} data-testid="gpu-card" data-gpu-id={g.id}>
            <Group justify="space-between" mb={6} wrap="nowrap">
              <Text fw={600} size="sm" truncate>
                {g.worker_name} · #{g.index} · {g.name}
              </Text>
              <Group gap={8} wrap="nowrap">
                <Text size="xs" title={t('gpu.utilization')}>
                  {num(g.utilization)}%
                </Text>
                <Text size="xs" title={t('gpu.temperature')}>
                  {num(g.temperature)}°C
                </Text>
                <Text size="xs" title={t('gpu.power')}>
                  {num(g.power)} W
                </Text>
              </Group>
            </Group>
            <VramBar gpu={g} />
          </Paper>
        ))}
      </SimpleGrid>
      {gpus.length > MAX_GPU_CARDS && (
        <Text size="sm" data-testid="gpu-cards-more">
          {t('dash.moreGpus', { shown: num(MAX_GPU_CARDS), total: num(gpus.length) })} <Anchor component={Link} to="/workers" size="sm">
            {t('dash.allGpus')}
          </Anchor>
        </Text>
      )}
      <SimpleGrid cols={{ base: 1, md: 2 }}>
        <Top title={t('dash.topProjects')} rows={month.data ?? []} name={projectName} />
        <Top title={t('dash.topModels')} rows={byModel.data ?? []} name={(k) => k} />
      </SimpleGrid>
    </Stack>
  );
}
