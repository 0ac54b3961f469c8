// Small pieces every page uses.
import { memo, useRef, type ButtonHTMLAttributes, type CSSProperties, type ReactNode } from 'react';
import { Alert, Group, Paper, SegmentedControl, Text, Title } from '@mantine/core';
import { useVirtualizer } from '@tanstack/react-virtual';
import { ApiError } from './api';
import { formatBytes, LOCALES, useI18n, type Locale } from './i18n';
import type { Gpu } from './api';

export function LanguageSwitch() {
  const { locale, setLocale, t } = useI18n();
  return (
    <SegmentedControl
      size="xs"
      aria-label={t('language')}
      value={locale}
      onChange={(v) => setLocale(v as Locale)}
      data={LOCALES}
      data-testid="language"
    />
  );
}

export function PageHeader({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <Group justify="space-between" mb="md" wrap="wrap">
      <Title order={1} size="h2">
        {title}
      </Title>
      <Group gap="xs">{children}</Group>
    </Group>
  );
}

export function ErrorAlert({ error }: { error: unknown }) {
  const { t } = useI18n();
  if (!error) return null;
  return (
    <Alert color="red" title={t('common.error')} role="alert" mb="md">
      {error instanceof ApiError || error instanceof Error ? error.message : String(error)}
    </Alert>
  );
}

const STATE_COLORS: Record<string, string> = {
  READY: 'green',
  RUNNING: 'green',
  ready: 'green',
  NOT_READY: 'red',
  ERROR: 'red',
  error: 'red',
  UNSCHEDULABLE: 'orange',
  MAINTENANCE: 'yellow',
  PENDING: 'gray',
  SCHEDULED: 'blue',
  DOWNLOADING: 'blue',
  downloading: 'blue',
  STARTING: 'cyan',
  STOPPED: 'gray',
  UNHEALTHY: 'orange',
  REGISTERING: 'gray',
  deleting: 'gray',
};

// Text colours dark enough for WCAG AA (4.5:1) on each light badge background; Mantine's own
// shades 6-8 of green, red, orange, yellow, cyan and teal are not.
const DARK_TEXT: Record<string, string> = {
  green: '#1e6b2f',
  red: '#a61e1e',
  orange: '#8f4300',
  yellow: '#6e5200',
  cyan: '#0a5f6d',
  teal: '#0a6650',
  blue: '#165a99',
  indigo: '#3048b8',
  gray: '#43494f',
};

// A small coloured label that stays readable. A plain element styled as Mantine's light badge
// (app.css .seg-tag): a table row mounts one per row, and a scroll mounts dozens of rows a frame.
export function Tag({ color, children, ...rest }: { color: string; children: ReactNode; [k: `data-${string}`]: string | undefined }) {
  const style = { '--tag-bg': `var(--mantine-color-${color}-light)`, color: DARK_TEXT[color] ?? DARK_TEXT.gray } as CSSProperties;
  return (
    <span className="seg-tag" style={style} {...rest}>
      {children}
    </span>
  );
}

// A row's small action button, a plain <button> styled as Mantine's compact-xs light button
// (app.css .seg-row-button): as cheap to mount as Tag. `danger` makes it red.
export function RowButton({ danger = false, children, ...rest }: { danger?: boolean; children: ReactNode } & ButtonHTMLAttributes<HTMLButtonElement>) {
  return (
    <button type="button" className="seg-row-button" data-danger={danger || undefined} {...rest}>
      {children}
    </button>
  );
}

export function StateBadge({ state, label }: { state: string; label?: string }) {
  return (
    <Tag color={STATE_COLORS[state] ?? 'gray'} data-state={state}>
      {label ?? state}
    </Tag>
  );
}

export function StatCard({ label, value, testId }: { label: string; value: ReactNode; testId?: string }) {
  return (
    <Paper withBorder p="md" data-testid={testId}>
      <Text size="xs" c="dimmed" tt="uppercase" fw={600}>
        {label}
      </Text>
      <Text size="xl" fw={700}>
        {value}
      </Text>
    </Paper>
  );
}

// One bar for a GPU's memory: allocated by segma's claims, used outside segma, free.
export function VramBar({ gpu, compact = false }: { gpu: Gpu; compact?: boolean }) {
  const { t, locale } = useI18n();
  const total = Math.max(gpu.memory_total, 1);
  const allocated = Math.min(gpu.memory_allocated, total);
  const external = Math.min(gpu.memory_used_external ?? 0, total - allocated);
  const free = Math.max(0, total - allocated - external);
  const pct = (n: number) => `${(100 * n) / total}%`;
  const b = (n: number) => formatBytes(locale, n);
  return (
    <div>
      <div
        className="vram-bar"
        role="img"
        aria-label={`${t('gpu.allocated')} ${b(allocated)}, ${t('gpu.external')} ${b(external)}, ${t('gpu.free')} ${b(free)}`}
      >
        <div style={{ width: pct(allocated), background: 'var(--mantine-color-indigo-6)' }} title={t('gpu.allocated')} />
        <div style={{ width: pct(external), background: 'var(--mantine-color-orange-5)' }} title={t('gpu.external')} />
      </div>
      {compact ? (
        <Text size="xs" mt={4} truncate>
          {t('gpu.allocated')} {b(allocated)} · {t('gpu.external')} {b(external)} · {t('gpu.free')} {b(free)} / {b(gpu.memory_total)}
        </Text>
      ) : (
      <Group gap="md" mt={4} wrap="wrap">
        <Text size="xs" data-testid="vram-allocated" data-bytes={gpu.memory_allocated}>
          <span style={{ color: 'var(--mantine-color-indigo-7)' }}>■</span> {t('gpu.allocated')}: {b(gpu.memory_allocated)}
        </Text>
        <Text size="xs" data-testid="vram-external" data-bytes={gpu.memory_used_external ?? 0}>
          <span style={{ color: 'var(--mantine-color-orange-7)' }}>■</span> {t('gpu.external')}: {b(gpu.memory_used_external ?? 0)}
        </Text>
        <Text size="xs" data-testid="vram-used" data-bytes={gpu.memory_used}>
          {t('gpu.used')}: {b(gpu.memory_used)}
        </Text>
        <Text size="xs" data-testid="vram-free" data-bytes={free}>
          {t('gpu.free')}: {b(free)}
        </Text>
        <Text size="xs" data-testid="vram-total" data-bytes={gpu.memory_total}>
          {t('common.total')}: {b(gpu.memory_total)}
        </Text>
      </Group>
      )}
    </div>
  );
}

export interface Column<T> {
  key: string;
  header: string;
  width?: number | string;
  render: (row: T) => ReactNode;
}

const CELL: CSSProperties = { padding: '4px 10px', fontSize: 14, overflow: 'hidden', textOverflow: 'ellipsis', whiteSpace: 'nowrap' };

// One row. Memoised: a scroll or a watch update re-renders only the rows whose object, position or
// columns changed, so pages pass columns that keep their identity between renders (useMemo).
function VirtualRowImpl<T>({ row, index, start, size, columns, template, rowKey }: {
  row: T;
  index: number;
  start: number;
  size: number;
  columns: Column<T>[];
  template: string;
  rowKey: string | number;
}) {
  return (
    <div
      role="row"
      aria-rowindex={index + 2}
      data-row-key={rowKey}
      style={{ position: 'absolute', top: 0, left: 0, right: 0, height: size, transform: `translateY(${start}px)`, display: 'grid', gridTemplateColumns: template, alignItems: 'center', borderBottom: '1px solid var(--mantine-color-gray-2)' }}
    >
      {columns.map((c) => (
        <div role="cell" key={c.key} style={CELL}>
          {c.render(row)}
        </div>
      ))}
    </div>
  );
}
const VirtualRow = memo(VirtualRowImpl) as typeof VirtualRowImpl;

// A table whose rows are virtualised: only the visible rows (and a few either side) are in the
// DOM, so lists of 10,000 GPUs or instances scroll smoothly (bench/ui/scale.mjs). Fixed row
// height; a CSS grid keeps the header and the rows aligned.
export function VirtualTable<T>({
  rows,
  columns,
  rowKey,
  height = 480,
  rowHeight = 44,
  label,
  testId,
}: {
  rows: T[];
  columns: Column<T>[];
  rowKey: (row: T) => string | number;
  height?: number;
  rowHeight?: number;
  label: string;
  testId?: string;
}) {
  const { t } = useI18n();
  const parent = useRef<HTMLDivElement>(null);
  const v = useVirtualizer({ count: rows.length, getScrollElement: () => parent.current, estimateSize: () => rowHeight, overscan: 4 });
  const template = columns.map((c) => (typeof c.width === 'number' ? `${c.width}px` : c.width ?? 'minmax(110px, 1fr)')).join(' ');
  // As wide as the columns' least widths: the body (contain: strict) clips whatever lies beyond
  // its box, so a narrower table showed the last columns' headers over empty rows on a phone.
  const minWidth = columns.reduce((sum, c) => {
    if (typeof c.width === 'number') return sum + c.width;
    const least = /(\d+)px/.exec(c.width ?? '110px');
    return sum + (least ? Number(least[1]) : 110);
  }, 0);
  const bodyHeight = Math.min(height, Math.max(rowHeight, rows.length * rowHeight));
  return (
    <Paper withBorder className="scroll-x" data-testid={testId}>
      <div role="table" aria-label={label} aria-rowcount={rows.length + 1} style={{ minWidth: Math.max(640, minWidth) }}>
        <div role="rowgroup">
          <div role="row" style={{ display: 'grid', gridTemplateColumns: template, borderBottom: '1px solid var(--mantine-color-gray-3)', background: 'var(--mantine-color-gray-0)' }}>
            {columns.map((c) => (
              <div role="columnheader" key={c.key} style={{ padding: '8px 10px', fontWeight: 600, fontSize: 13 }}>
                {c.header}
              </div>
            ))}
          </div>
        </div>
        {rows.length === 0 ? (
          <Text p="md" c="dimmed" size="sm">
            {t('common.empty')}
          </Text>
        ) : (
          <div
            ref={parent}
            role="rowgroup"
            // A list taller than its box scrolls: keyboard users reach it with Tab.
            tabIndex={rows.length * rowHeight > height ? 0 : undefined}
            style={{ height: bodyHeight, overflowY: 'auto', contain: 'strict' }}
          >
            <div role="presentation" style={{ height: v.getTotalSize(), position: 'relative' }}>
              {v.getVirtualItems().map((item) => {
                const row = rows[item.index];
                const key = rowKey(row);
                return <VirtualRow key={key} row={row} index={item.index} start={item.start} size={item.size} columns={columns} template={template} rowKey={key} />;
              })}
            </div>
          </div>
        )}
      </div>
    </Paper>
  );
}

// key=value lines ↔ an object (labels, worker selectors, env).
export function parsePairs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const s = line.trim();
    if (!s) continue;
    const eq = s.indexOf('=');
    if (eq < 0) out[s] = '';
    else out[s.slice(0, eq).trim()] = s.slice(eq + 1).trim();
  }
  return out;
}
export function formatPairs(o: Record<string, string> | undefined): string {
  return Object.entries(o ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join('\n');
}
