import { useState } from 'react';
import { Progress, Stack } from '@mantine/core';
import { api, useWatch } from '../api';
import { usePermissions } from '../auth';
import { ErrorAlert, PageHeader, RowButton, StateBadge, VirtualTable } from '../components';
import { useI18n } from '../i18n';

interface ModelFile {
  id: number;
  worker_name: string;
  source: string;
  source_key: string;
  backend: string;
  local_path: string;
  state: string;
  state_message: string;
  size_bytes: number;
  downloaded_bytes: number;
  progress: number;
}

export default function ModelFiles() {
  const { t, bytes, num } = useI18n();
  const perms = usePermissions();
  const files = useWatch<ModelFile>('/v2/model-files');
  const [error, setError] = useState<unknown>();
  const remove = async (f: ModelFile) => {
    setError(undefined);
    try {
      await api('DELETE', `/v2/model-files/${f.id}`);
    } catch (e) {
      setError(e);
    }
  };
  return (
    <Stack>
      <PageHeader title={t('files.title')} />
      <ErrorAlert error={error} />
      <VirtualTable
        label={t('files.title')}
        rows={files.items}
        rowKey={(f) => f.id}
        columns={[
          { key: 'source', header: t('files.source'), width: 'minmax(200px, 2fr)', render: (f) => f.source_key || f.source },
          { key: 'worker', header: t('common.worker'), render: (f) => f.worker_name },
          { key: 'state', header: t('common.state'), width: 120, render: (f) => <StateBadge state={f.state} /> },
          { key: 'progress', header: t('files.progress'), width: 160, render: (f) => <Progress value={f.progress} aria-label={`${num(f.progress)}%`} /> },
          { key: 'size', header: t('files.size'), width: 110, render: (f) => bytes(f.size_bytes) },
          { key: 'path', header: t('files.path'), render: (f) => <span className="mono" title={f.local_path}>{f.local_path}</span> },
          ...(perms.isAdmin ? [{ key: 'actions', header: t('common.actions'), width: 100, render: (f: ModelFile) => <RowButton danger onClick={() => remove(f)}>{t('common.delete')}</RowButton> }] : []),
        ]}
      />
    </Stack>
  );
}
