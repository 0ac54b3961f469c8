import { useMemo } from 'react';
import { Stack } from '@mantine/core';
import { useWatch, type Model } from '../api';
import { PageHeader, VirtualTable } from '../components';
import { useProjects } from '../hooks';
import { useI18n } from '../i18n';

interface RouteRow {
  id: number;
  name: string;
  project_id: number;
  description: string;
  targets: { model_id: number; weight: number }[];
  updated_at: string;
}

export default function ModelRoutes() {
  const { t, date } = useI18n();
  const routes = useWatch<RouteRow>('/v2/model-routes');
  const models = useWatch<Model>('/v2/models');
  const projects = useProjects();
  const modelName = useMemo(() => new Map(models.items.map((m) => [m.id, m.name])), [models.items]);
  const projectName = useMemo(() => new Map((projects.data ?? []).map((p) => [p.id, p.name])), [projects.data]);
  return (
    <Stack>
      <PageHeader title={t('routes.title')} />
      <VirtualTable
        label={t('routes.title')}
        rows={routes.items}
        rowKey={(r) => r.id}
        columns={[
          { key: 'name', header: t('common.name'), render: (r) => <b>{r.name}</b> },
          { key: 'project', header: t('common.project'), render: (r) => projectName.get(r.project_id) ?? r.project_id },
          { key: 'targets', header: t('routes.targets'), width: 'minmax(240px, 2fr)', render: (r) => r.targets.map((x) => `${modelName.get(x.model_id) ?? x.model_id} (${x.weight === 0 ? t('routes.fallback') : `${t('routes.weight')} ${x.weight}`})`).join(', ') },
          { key: 'desc', header: t('common.description'), render: (r) => r.description || '—' },
          { key: 'updated', header: t('common.created'), render: (r) => date(r.updated_at) },
        ]}
      />
    </Stack>
  );
}
