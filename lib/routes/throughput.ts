import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  THROUGHPUT_WINDOW_DEFAULT, THROUGHPUT_WINDOW_MAX, ThroughputQuerySchema, ThroughputSchema, type Throughput,
} from '../schemas/live.js';
import { validationProblem } from '../http/problem.js';
import type { ActivityService } from '../services/activity-service.js';

export interface ThroughputRouteOptions {
  activity: ActivityService;
}

function parseWindow(raw: string | undefined): number {
  if (raw === undefined) return THROUGHPUT_WINDOW_DEFAULT;
  const value = /^\d{1,4}$/.test(raw) ? Number(raw) : NaN;
  if (!(value >= 1 && value <= THROUGHPUT_WINDOW_MAX)) {
    throw validationProblem([{ field: 'window', message: `must be an integer from 1 to ${THROUGHPUT_WINDOW_MAX}` }]);
  }
  return value;
}

const throughputRoutes: FastifyPluginAsyncTypebox<ThroughputRouteOptions> = async (app, options) => {
  app.get('/throughput', {
    schema: { querystring: ThroughputQuerySchema, response: { 200: ThroughputSchema } },
  }, async (request): Promise<Throughput> => {
    const window = parseWindow(request.query.window);
    return { window, interval_ms: 1000, samples: options.activity.throughputWindow(window) };
  });
};

export default throughputRoutes;
