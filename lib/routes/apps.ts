import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { AppDetailSchema, AppListSchema, AppPidParamsSchema } from '../schemas/live.js';
import { ProblemError } from '../http/problem.js';
import type { ActivityService } from '../services/activity-service.js';

export interface AppRouteOptions {
  activity: ActivityService;
}

function unknownPid(raw: string): ProblemError {
  return new ProblemError(404, `no running process ${raw} has used the network`);
}

const appRoutes: FastifyPluginAsyncTypebox<AppRouteOptions> = async (app, options) => {
  app.get('/apps', { schema: { response: { 200: AppListSchema } } }, async () => options.activity.apps());

  app.get('/apps/:pid', { schema: { params: AppPidParamsSchema, response: { 200: AppDetailSchema } } }, async (request) => {
    const raw = request.params.pid;
    if (!/^[1-9]\d{0,9}$/.test(raw)) throw unknownPid(raw);
    const detail = await options.activity.app(Number(raw));
    if (detail === null) throw unknownPid(raw);
    return detail;
  });
};

export default appRoutes;
