import { lazy, Suspense, useMemo, useState } from 'react';
import { Button, Group, Paper, Select, Stack, Table, TextInput } from '@mantine/core';
import { useProjects, useUsage, rfc3339 } from '../hooks';
import { ErrorAlert, PageHeader } from '../components';
import { useI18n } from '../i18n';

const Chart = lazy(() => import('../Chart'));

const day = (d: Date) => d.toISOString().slice(0, 10);
const GROUPS = ['project', 'route', 'deployment', 'gpu_type', 'key', 'user', 'finish'];
const BUCKETS = ['none', 'hour', 'day', 'month'];

// A bucket's start (UTC) as the period it names: 2026-03 for a month, 2026-03-01 for a day,
// 2026-03-01 14:00 for an hour.
function period(bucket: string | undefined, iso: string | undefined): string {
  if (!iso) return '';
  if (bucket === 'month') return iso.slice(0, 7);
  if (bucket === 'day') return iso.slice(0, 10);
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)}`;
}

export default function Usage() {
  const { t, num } = useI18n();
  const [groupBy, setGroupBy] = useState('project');
  const [bucket, setBucket] = useState('none');
  const [from, setFrom] = useState(day(new Date(Date.now() - 30 * 86400_000)));
  const [to, setTo] = useState(day(new Date(Date.now() + 86400_000)));
  const fromDate = new Date(`${from}T00:00:00`);
  const toDate = new Date(`${to}T00:00:00`);
  const bucketParam = bucket === 'none' ? undefined : bucket;
  const usage = useUsage(groupBy, fromDate, toDate, undefined, bucketParam);
  const projects = useProjects();
  const groupLabel = t(`usage.by.${groupBy}` as 'usage.by.project');
  const name = useMemo(() => {
    const m = new Map((projects.data ?? []).map((p) => [String(p.id), p.name]));
    return (k: string) => (k === '' ? t('usage.unattributed', { group: groupLabel }) : groupBy === 'project' ? m.get(k) ?? k : k);
  }, [projects.data, groupBy, groupLabel, t]);
  // Per bucket the server's order (by period, then key); over the whole range the biggest first.
  const rows = useMemo(() => {
    const all = [...(usage.data ?? [])];
    if (bucketParam) return all;
    const weight = (r: (typeof all)[number]) => (r.cost ?? 0) * 1e9 + r.prompt_tokens + r.completion_tokens;
    return all.sort((a, b) => weight(b) - weight(a));
  }, [usage.data, bucketParam]);
  const currency = rows[0]?.currency ?? 'USD';
  const totals = useMemo(
    () =>
      rows.reduce(
        (s, r) => ({
          requests: s.requests + r.requests,
          errors: s.errors + r.errors,
          prompt: s.prompt + r.prompt_tokens,
          completion: s.completion + r.completion_tokens,
          gpu: s.gpu + (r.gpu_hours ?? 0),
          cost: s.cost + (r.cost ?? 0),
        }),
        { requests: 0, errors: 0, prompt: 0, completion: 0, gpu: 0, cost: 0 },
      ),
    [rows],
  );
  const series = useMemo(
    () => [
      { name: t('usage.promptTokens'), values: rows.map((r) => r.prompt_tokens) },
      { name: t('usage.completionTokens'), values: rows.map((r) => r.completion_tokens) },
    ],
    [rows, t],
  );
  const categories = useMemo(
    () => rows.map((r) => (bucketParam ? `${period(bucketParam, r.bucket)} · ${name(r.key)}` : name(r.key))),
    [rows, name, bucketParam],
  );
  const csvParams = new URLSearchParams({ group_by: groupBy, from: rfc3339(fromDate), to: rfc3339(toDate), format: 'csv' });
  if (bucketParam) csvParams.set('bucket', bucketParam);
  const csv = `/v2/usage?${csvParams}`;
  return (
    <Stack>
      <PageHeader title={t('usage.title')}>
        <Button component="a" href={csv} download variant="light" data-testid="usage-csv">
          {t('usage.csv')}
        </Button>
      </PageHeader>
      <Group align="flex-end">
        <Select label={t('usage.groupBy')} value={groupBy} onChange={(v) => setGroupBy(v ?? 'project')} data={GROUPS.map((g) => ({ value: g, label: t(`usage.by.${g}` as 'usage.by.project') }))} allowDeselect={false} data-testid="usage-group" />
        <Select label={t('usage.bucket')} value={bucket} onChange={(v) => setBucket(v ?? 'none')} data={BUCKETS.map((b) => ({ value: b, label: t(`usage.bucket.${b}` as 'usage.bucket.none') }))} allowDeselect={false} data-testid="usage-bucket" />
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
              {bucketParam && <Table.Th>{t('usage.period')}</Table.Th>}
              <Table.Th>{groupLabel}</Table.Th>
              <Table.Th ta="right">{t('dash.requests')}</Table.Th>
              <Table.Th ta="right">{t('usage.errors')}</Table.Th>
              <Table.Th ta="right">{t('usage.promptTokens')}</Table.Th>
              <Table.Th ta="right">{t('usage.completionTokens')}</Table.Th>
              <Table.Th ta="right">{t('usage.gpuHours')}</Table.Th>
              <Table.Th ta="right">{t('usage.cost', { currency })}</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {rows.map((r) => (
              <Table.Tr key={`${r.bucket ?? ''}/${r.key}`} data-key={r.key} data-bucket={r.bucket}>
                {bucketParam && <Table.Td>{period(bucketParam, r.bucket)}</Table.Td>}
                <Table.Td>{name(r.key)}</Table.Td>
                <Table.Td ta="right">{num(r.requests)}</Table.Td>
                <Table.Td ta="right">{num(r.errors)}</Table.Td>
                <Table.Td ta="right">{num(r.prompt_tokens)}</Table.Td>
                <Table.Td ta="right" data-testid="completion-tokens">{num(r.completion_tokens)}</Table.Td>
                <Table.Td ta="right" data-testid="gpu-hours">{num(r.gpu_hours ?? 0, 2)}</Table.Td>
                <Table.Td ta="right" data-testid="cost">{num(r.cost ?? 0, 2)}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
          {rows.length > 1 && (
            <Table.Tfoot>
              <Table.Tr data-testid="usage-total">
                <Table.Th colSpan={bucketParam ? 2 : 1}>{t('usage.total')}</Table.Th>
                <Table.Th ta="right">{num(totals.requests)}</Table.Th>
                <Table.Th ta="right">{num(totals.errors)}</Table.Th>
                <Table.Th ta="right">{num(totals.prompt)}</Table.Th>
                <Table.Th ta="right">{num(totals.completion)}</Table.Th>
                <Table.Th ta="right">{num(totals.gpu, 2)}</Table.Th>
                <Table.Th ta="right">{num(totals.cost, 2)}</Table.Th>
              </Table.Tr>
            </Table.Tfoot>
          )}
        </Table>
      </Paper>
    </Stack>
  );
}
