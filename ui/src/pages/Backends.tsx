import { Stack } from '@mantine/core';
import { useQuery } from '@tanstack/react-query';
import { listAll } from '../api';
import { ErrorAlert, PageHeader, Tag, VirtualTable } from '../components';
import { useI18n } from '../i18n';

interface Backend {
  name: string;
  built_in: boolean;
  default_version: string;
  versions: { version: string }[] | Record<string, unknown>;
  model_formats: string[];
  custom_versions?: unknown[];
}

export default function Backends() {
  const { t } = useI18n();
  const backends = useQuery({ queryKey: ['backends'], queryFn: () => listAll<Backend>('/v2/backends') });
  const versions = (b: Backend) => (Array.isArray(b.versions) ? b.versions.map((v) => v.version) : Object.keys(b.versions ?? {})).join(', ');
  return (
    <Stack>
      <PageHeader title={t('backends.title')} />
      <ErrorAlert error={backends.error} />
      <VirtualTable
        label={t('backends.title')}
        rows={backends.data ?? []}
        rowKey={(b) => b.name}
        columns={[
          { key: 'name', header: t('common.name'), render: (b) => <b>{b.name}</b> },
          { key: 'kind', header: t('common.state'), width: 110, render: (b) => <Tag color={b.built_in ? 'indigo' : 'teal'}>{b.built_in ? t('backends.builtIn') : t('backends.custom')}</Tag> },
          { key: 'versions', header: t('backends.versions'), render: versions },
          { key: 'default', header: t('backends.default'), render: (b) => b.default_version || '—' },
          { key: 'formats', header: t('backends.formats'), render: (b) => (b.model_formats ?? []).join(', ') || '—' },
        ]}
      />
    </Stack>
  );
}
