import { lazy, Suspense, useMemo, useState } from 'react';
import { Button, Group, Paper, Select, Stack, Table, TextInput } from '@mantine/core';
import { useProjects, useUsage, rfc3339 } from '../hooks';
import { ErrorAlert, PageHeader } from '../components';
import { useI18n } from '../i18n';

const Chart = lazy(() => import('../Chart'));

const day = (d: Date) => d.toISOString().slice(0, 10);

export default function Usage() {
  const { t, num } = useI18n();
  const [groupBy, setGroupBy] = useState('project');
  const [from, setFrom] = useState(day(new Date(Date.now() - 30 * 86400_000)));
  const [to, setTo] = useState(day(new Date(Date.now() + 86400_000)));
  const fromDate = new Date(`${from}T00:00:00`);
  const toDate = new Date(`${to}T00:00:00`);
  const usage = useUsage(groupBy, fromDate, toDate);
  const projects = useProjects();
  const name = useMemo(() => {
    const m = new Map((projects.data ?? []).map((p) => [String(p.id), p.name]));
    return (k: string) => (groupBy === 'project' ? m.get(k) ?? k : k);
  }, [projects.data, groupBy]);
  const rows = useMemo(() => [...(usage.data ?? [])].sort((a, b) => b.prompt_tokens + b.completion_tokens - a.prompt_tokens - a.completion_tokens), [usage.data]);
  const series = useMemo(
    () => [
      { name: t('usage.promptTokens'), values: rows.map((r) => r.prompt_tokens) },
      { name: t('usage.completionTokens'), values: rows.map((r) => r.completion_tokens) },
    ],
    [rows, t],
  );
  const categories = useMemo(() => rows.map((r) => name(r.key)), [rows, name]);
  const csv = `/v2/usage?${new URLSearchParams({ group_by: groupBy, from: rfc3339(fromDate), to: rfc3339(toDate), format: 'csv' })}`;
  const groupLabel = t(`usage.by.${groupBy}` as 'usage.by.project');
  return (
    <Stack>
      <PageHeader title={t('usage.title')}>
        <Button component="a" href={csv} download variant="light" data-testid="usage-csv">
          {t('usage.csv')}
        </Button>
      </PageHeader>
      <Group align="flex-end">
        <Select label={t('usage.groupBy')} value={groupBy} onChange={(v) => setGroupBy(v ?? 'project')} data={['project', 'model', 'key', 'user'].map((g) => ({ value: g, label: t(`usage.by.${g}` as 'usage.by.project') }))} allowDeselect={false} data-testid="usage-group" />
        <TextInput type="date" label={t('usage.from')} value={from} onChange={(e) => setFrom(e.currentTarget.value)} />
        <TextInput type="date" label={t('usage.to')} value={to} onChange={(e) => setTo(e.currentTarget.value)} />
      </Group>
      <ErrorAlert error={usage.error} />
      {rows.length > 0 && (
        <Paper withBorder p="sm">
          <Suspense fallback={<div style={{ height: 300 }} />}>
            <Chart categories={categories} series={series} label={t('usage.chart', { group: groupLabel })} />
          </Suspense>
        </Paper>
      )}
      <Paper withBorder className="scroll-x">
        <Table striped data-testid="usage-table">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>{groupLabel}</Table.Th>
              <Table.Th ta="right">{t('dash.requests')}</Table.Th>
              <Table.Th ta="right">{t('usage.errors')}</Table.Th>
              <Table.Th ta="right">{t('usage.promptTokens')}</Table.Th>
              <Table.Th ta="right">{t('usage.completionTokens')}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {rows.map((r) => (
              <Table.Tr key={r.key} data-key={r.key}>
                <Table.Td>{name(r.key)}</Table.Td>
                <Table.Td ta="right">{num(r.requests)}</Table.Td>
                <Table.Td ta="right">{num(r.errors)}</Table.Td>
                <Table.Td ta="right">{num(r.prompt_tokens)}</Table.Td>
                <Table.Td ta="right" data-testid="completion-tokens">{num(r.completion_tokens)}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      </Paper>
    </Stack>
  );
}
