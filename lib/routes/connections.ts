import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ConnectionListSchema } from '../schemas/live.js';
import type { ActivityService } from '../services/activity-service.js';

export interface ConnectionRouteOptions {
  activity: ActivityService;
}

const connectionRoutes: FastifyPluginAsyncTypebox<ConnectionRouteOptions> = async (app, options) => {
  app.get('/connections', { schema: { response: { 200: ConnectionListSchema } } }, async () => options.activity.connections());
};

export default connectionRoutes;
