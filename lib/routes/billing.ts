/**
 * /billing: buy credits through the license server. Each endpoint has its own token bucket (rates in
 * docs/api.md "Licensing"); a call over it is a 429 with Retry-After before anything reaches the server.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import {
  CheckMintedSchema, CheckoutBodySchema, CheckoutSchema, CheckPendingSchema, NonceParamsSchema, PackListSchema,
} from '../schemas/license.js';
import { rateLimited, TokenBucket, type BucketRate } from '../http/rate-limit.js';
import type { LicenseService } from '../services/license-service.js';
import { LICENSE_SERVER_PROBLEMS, RATE_LIMITED_PROBLEMS } from './openapi.js';

/** A checkout opens a payment page; a person does that a few times, not in a loop. */
export const CHECKOUT_RATE: BucketRate = { burst: 5, perSecond: 0.1 };
/** A client polls check about once a second while the user pays; twice that rate is still fine. */
export const CHECK_RATE: BucketRate = { burst: 10, perSecond: 2 };
/** Packs come from a cache; the bucket only stops a runaway client. */
export const PACKS_RATE: BucketRate = { burst: 10, perSecond: 1 };

export interface BillingRouteOptions {
  license: LicenseService;
  /** Prefix of Location headers, e.g. "/api/v1". */
  basePath: string;
  /** Epoch milliseconds, for the buckets (tests). */
  now?: () => number;
}

const billingRoutes: FastifyPluginAsyncTypebox<BillingRouteOptions> = async (app, options) => {
  const { license } = options;
  const bucket = (rate: BucketRate): TokenBucket => new TokenBucket(rate, options.now);

  app.post('/billing/checkout', {
    schema: {
      summary: "A payment page for a credit pack, with a nonce to poll", body: CheckoutBodySchema, response: { 201: CheckoutSchema },
      problems: { ...LICENSE_SERVER_PROBLEMS, ...RATE_LIMITED_PROBLEMS },
    },
    onRequest: rateLimited(bucket(CHECKOUT_RATE), 'POST /billing/checkout'),
  }, async (request, reply) => {
    const checkout = await license.checkout(request.body.variant_id);
    // The checkout is a resource of its own: its state is polled there.
    reply.code(201).header('Location', `${options.basePath}/billing/check/${checkout.nonce}`);
    return checkout;
  });

  app.get('/billing/check/:nonce', {
    schema: {
      summary: 'Poll a checkout: 202 until the credit is minted, then 200 with the token (activated here)',
      params: NonceParamsSchema, response: { 200: CheckMintedSchema, 202: CheckPendingSchema },
      problems: { ...LICENSE_SERVER_PROBLEMS, ...RATE_LIMITED_PROBLEMS },
    },
    onRequest: rateLimited(bucket(CHECK_RATE), 'GET /billing/check'),
  }, async (request, reply) => {
    const result = await license.check(request.params.nonce);
    reply.header('cache-control', 'no-store');
    if (result.status === 'pending') reply.code(202);
    return result;
  });

  app.get('/billing/packs', {
    schema: {
      summary: 'Credit packs for sale (cached a few minutes)', response: { 200: PackListSchema },
      problems: { ...LICENSE_SERVER_PROBLEMS, ...RATE_LIMITED_PROBLEMS },
    },
    onRequest: rateLimited(bucket(PACKS_RATE), 'GET /billing/packs'),
  }, async () => ({ packs: await license.packs() }));
};

export default billingRoutes;
