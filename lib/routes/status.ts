import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { StatusSchema, type Status } from '../schemas/status.js';
import type { Engine } from '../engine/engine.js';
import type { RuleService } from '../services/rule-service.js';
import type { BlockedTotal } from '../services/blocked-total.js';

export interface StatusRouteOptions {
  engine: Engine;
  rules: RuleService;
  blocked: BlockedTotal;
  version: string;
  startedAt: Date;
}

const statusRoutes: FastifyPluginAsyncTypebox<StatusRouteOptions> = async (app, options) => {
  app.get('/status', { schema: { response: { 200: StatusSchema } } }, async (): Promise<Status> => {
    const engineStatus = options.engine.status();
    const summary = options.rules.summary();
    return {
      version: options.version,
      platform: engineStatus.platform,
      wfp_active: engineStatus.filtering,
      kdrv_active: engineStatus.shaping,
      active_rules: summary.activeRules,
      monitored_apps: summary.monitoredApps,
      active_connections: 0, // the connection table arrives with /connections
      total_blocked: await options.blocked.sample(),
      uptime_since: options.startedAt.toISOString(),
      competing_shapers: [],
      wfp_session_state: engineStatus.state,
      bfe_restarts: 0, // Windows BFE bounces; the Linux engine has no equivalent yet
    };
  });
};

export default statusRoutes;
