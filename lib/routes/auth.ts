import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { rotateToken, type TokenVerifier } from '../services/auth-token.js';
import type { EventStreamHub } from '../services/event-stream.js';

export interface AuthRouteOptions {
  dataDir: string;
  tokens: TokenVerifier;
  /** Open SSE streams were authorised with the old token; they end with it. */
  eventStream: EventStreamHub;
}

export const RotatedTokenSchema = Type.Object({ token: Type.String() });

const authRoutes: FastifyPluginAsyncTypebox<AuthRouteOptions> = async (app, options) => {
  app.post('/auth/rotate', {
    schema: { summary: 'Replace the bearer token; the old one is refused from the next request on', response: { 200: RotatedTokenSchema } },
  }, async (_request, reply) => {
    reply.header('cache-control', 'no-store');
    const token = rotateToken(options.dataDir, options.tokens);
    options.eventStream.endAll();
    return { token };
  });
};

export default authRoutes;
