// Who is signed in (GET /v2/users/me) and what they may do: the UI hides what the server would
// refuse (the server still enforces every call).
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect } from 'react';
import { api, type Role, type User } from './api';

// The session check; main.tsx starts it before the first render.
export const meQuery = {
  queryKey: ['me'],
  queryFn: () => api<User>('GET', '/v2/users/me'),
  retry: false,
  staleTime: 60_000,
};

export function useMe() {
  const qc = useQueryClient();
  const q = useQuery(meQuery);
  useEffect(() => {
    const onUnauth = () => qc.setQueryData(['me'], null);
    const onMustChange = () => qc.invalidateQueries({ queryKey: ['me'] });
    window.addEventListener('segma:unauthenticated', onUnauth);
    window.addEventListener('segma:password-change-required', onMustChange);
    return () => {
      window.removeEventListener('segma:unauthenticated', onUnauth);
      window.removeEventListener('segma:password-change-required', onMustChange);
    };
  }, [qc]);
  return q;
}

const RANK: Record<Role, number> = { viewer: 1, member: 2, 'project-admin': 3 };

export interface Permissions {
  isAdmin: boolean;
  role: (projectId: number) => Role | undefined;
  // At least `need` in the project (platform admins always).
  can: (need: Role, projectId?: number) => boolean;
  // At least `need` in some project.
  canAny: (need: Role) => boolean;
}

export function permissions(me: User | null | undefined): Permissions {
  const roles = new Map((me?.projects ?? []).map((p) => [p.project_id, p.role]));
  const isAdmin = !!me?.is_admin;
  return {
    isAdmin,
    role: (id) => roles.get(id),
    can: (need, id) => {
      if (isAdmin) return true;
      if (id === undefined) return false;
      const r = roles.get(id);
      return !!r && RANK[r] >= RANK[need];
    },
    canAny: (need) => isAdmin || [...roles.values()].some((r) => RANK[r] >= RANK[need]),
  };
}

export function usePermissions(): Permissions {
  const { data } = useMe();
  return permissions(data);
}
