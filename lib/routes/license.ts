/**
 * /license: this machine's clamp-slot cap and the credits behind it. Decisions the reference leaves open
 * are in docs/api.md ("Licensing").
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  ActivationSchema, CreditIdParamsSchema, HwidSchema, LicenseStateSchema, TokenBodySchema, TransferSchema,
} from '../schemas/license.js';
import type { LicenseService } from '../services/license-service.js';
import { LICENSE_SERVER_PROBLEMS } from './openapi.js';

export interface LicenseRouteOptions {
  license: LicenseService;
}

const licenseRoutes: FastifyPluginAsyncTypebox<LicenseRouteOptions> = async (app, options) => {
  const { license } = options;

  app.get('/license', {
    schema: { summary: 'Clamp-slot cap, slots used, baseline and the credits of this machine', response: { 200: LicenseStateSchema } },
  }, async () => license.state());

  app.get('/license/hwid', {
    schema: { summary: "This machine's HWID hash and the identifiers that went into it", response: { 200: HwidSchema } },
  }, async () => license.hwidInfo());

  app.post('/license/activate', {
    schema: { summary: 'Activate a credit token bound to this machine (idempotent)', body: TokenBodySchema, response: { 200: ActivationSchema } },
  }, async (request) => license.activate(request.body.token));

  app.post('/license/transfer/:credit_id', {
    schema: {
      summary: 'Unbind a credit at the license server; answers the unbound token to rebind elsewhere',
      params: CreditIdParamsSchema, response: { 200: TransferSchema },
      problems: {
        ...LICENSE_SERVER_PROBLEMS,
        409: 'The credit does not count here, its transfer is under way, the slots in use need it, or the server refused',
      },
    },
  }, async (request, reply) => {
    // The unbound token is the credit now: no cache may keep it.
    reply.header('cache-control', 'no-store');
    return license.transfer(request.params.credit_id);
  });

  app.post('/license/rebind', {
    schema: {
      summary: 'Bind an unbound token to this machine at the license server and activate it',
      body: TokenBodySchema, response: { 200: ActivationSchema }, problems: LICENSE_SERVER_PROBLEMS,
    },
  }, async (request) => license.rebind(request.body.token));
};

export default licenseRoutes;
