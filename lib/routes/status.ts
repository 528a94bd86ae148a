import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { StatusSchema, type Status } from '../schemas/status.js';
import type { Engine } from '../engine/engine.js';
import type { RuleService } from '../services/rule-service.js';
import type { BlockedTotal } from '../services/blocked-total.js';
import type { ActivityService } from '../services/activity-service.js';
import type { EngineSupervisor } from '../services/engine-supervisor.js';

export interface StatusRouteOptions {
  engine: Engine;
  rules: RuleService;
  blocked: BlockedTotal;
  version: string;
  startedAt: Date;
  activity: ActivityService;
  supervisor: EngineSupervisor;
  onError: (error: unknown) => void;
}

const statusRoutes: FastifyPluginAsyncTypebox<StatusRouteOptions> = async (app, options) => {
  app.get('/status', { schema: { response: { 200: StatusSchema } } }, async (): Promise<Status> => {
    // The supervisor's view: RECOVERING while it re-attaches, which the engine itself cannot know.
    const engineStatus = options.supervisor.status();
    const { engine, activity, onError } = options;
    // Each live figure is best-effort: /status must answer while the engine is down.
    const [counts, shapers] = await Promise.all([
      activity.counts().catch((error: unknown) => { onError(error); return { connections: 0, apps: 0 }; }),
      (engine.competingShapers?.() ?? Promise.resolve([])).catch((error: unknown) => { onError(error); return []; }),
    ]);
    return {
      version: options.version,
      platform: engineStatus.platform,
      wfp_active: engineStatus.filtering,
      kdrv_active: engineStatus.shaping,
      active_rules: options.rules.summary().activeRules,
      monitored_apps: counts.apps,
      active_connections: counts.connections,
      total_blocked: await options.blocked.recent(),
      uptime_since: options.startedAt.toISOString(),
      competing_shapers: shapers.map(({ name, detail }) => ({ name, detail })),
      wfp_session_state: engineStatus.state,
      bfe_restarts: options.supervisor.restarts,
    };
  });
};

export default statusRoutes;
