-- A cluster's default for models that do not choose how they are held to their claim on a shared
-- GPU (types::Cluster::gpu_sharing, docs/gpu-sharing.md).
ALTER TABLE clusters ADD COLUMN gpu_sharing TEXT NOT NULL DEFAULT 'enforced';
