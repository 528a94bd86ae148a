import Type, { type Static } from 'typebox';

export const CompetingShaperSchema = Type.Object({ name: Type.String(), detail: Type.String() });

export const StatusSchema = Type.Object({
  version: Type.String(),
  platform: Type.String(),
  wfp_active: Type.Boolean(),
  kdrv_active: Type.Boolean(),
  active_rules: Type.Integer(),
  monitored_apps: Type.Integer(),
  active_connections: Type.Integer(),
  total_blocked: Type.Integer(),
  uptime_since: Type.String(),
  competing_shapers: Type.Array(CompetingShaperSchema),
  wfp_session_state: Type.Enum(['OPEN', 'DOWN', 'RECOVERING', 'UNAVAILABLE']),
  bfe_restarts: Type.Integer(),
});
export type Status = Static<typeof StatusSchema>;
