import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ConfigSchema, EffectiveConfigSchema } from '../schemas/config.js';
import { validationProblem } from '../http/problem.js';
import { ConfigError } from '../services/config.js';
import type { ConfigService } from '../services/config-service.js';

export interface ConfigRouteOptions {
  config: ConfigService;
}

const configRoutes: FastifyPluginAsyncTypebox<ConfigRouteOptions> = async (app, options) => {
  const { config } = options;

  app.get('/config', {
    schema: { summary: 'The effective config.toml as JSON, defaults filled in', response: { 200: EffectiveConfigSchema } },
  }, async () => config.current());

  app.put('/config', {
    schema: {
      summary: 'Replace the whole config (omitted keys take their defaults); applied at once, listen address included',
      body: ConfigSchema,
      response: { 200: EffectiveConfigSchema },
    },
  }, async (request) => {
    try {
      // A missing body is an empty document: every default.
      return await config.replace(request.body ?? {});
    } catch (error) {
      if (error instanceof ConfigError) throw validationProblem(error.errors);
      throw error;
    }
  });
};

export default configRoutes;
