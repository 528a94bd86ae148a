import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { rotateToken, type TokenVerifier } from '../services/auth-token.js';

export interface AuthRouteOptions {
  dataDir: string;
  tokens: TokenVerifier;
}

export const RotatedTokenSchema = Type.Object({ token: Type.String() });

const authRoutes: FastifyPluginAsyncTypebox<AuthRouteOptions> = async (app, options) => {
  app.post('/auth/rotate', {
    schema: { summary: 'Replace the bearer token; the old one is refused from the next request on', response: { 200: RotatedTokenSchema } },
  }, async (_request, reply) => {
    reply.header('cache-control', 'no-store');
    return { token: rotateToken(options.dataDir, options.tokens) };
  });
};

export default authRoutes;
