/**
 * The reference license server as a fastify instance: `buildLicenseServer` for app.inject, and
 * `startLicenseServer` that listens and returns its URL. It owns its SQLite file and closes it on close.
 */
import type { KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { TypeBoxValidatorCompiler, type FastifyPluginAsyncTypebox, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Compile } from 'typebox/compile';
import { installProblemHandlers } from '../http/hooks.js';
import { fieldErrorsFromSchemaIssues, ProblemError, validationProblem, type SchemaValidationIssue } from '../http/problem.js';
import { CreditIssuer } from './credit-issuer.js';
import { LemonSqueezyCheckouts, type PaymentProvider, type ProviderSettings } from './provider.js';
import {
  BindRequestSchema, CheckoutCreatedSchema, CheckoutMintedSchema, CheckoutParamsSchema, CheckoutPendingSchema,
  CheckoutQuerySchema, CheckoutRequestSchema, CreditParamsSchema, PacksResponseSchema, TokenResponseSchema,
  UnbindRequestSchema, WebhookSchema, type Pack,
} from './schemas.js';
import { LicenseServerStore } from './store.js';
import { isValidWebhookSignature, SIGNATURE_HEADER } from './webhook-signature.js';

export const DEFAULT_LISTEN = '127.0.0.1:9846';
const BODY_LIMIT = 64 * 1024;
/** Lemon Squeezy order documents are a few KiB; this leaves room without inviting floods. */
const WEBHOOK_BODY_LIMIT = 256 * 1024;

export interface LicenseServerOptions {
  /** The vendor's Ed25519 private key: it signs every token. */
  privateKey: KeyObject;
  /** Shared with the payment provider; signs its webhooks. */
  webhookSecret: string;
  /** The provider's checkout API (settings of the Lemon Squeezy client, or any PaymentProvider in tests). */
  provider: ProviderSettings | PaymentProvider;
  packs: readonly Pack[];
  /** SQLite file; created with its directory's permissions if missing. */
  dbPath: string;
  /** Defaults to no logging. */
  logger?: Logger;
  /** Epoch milliseconds (tests). */
  now?: () => number;
}

const webhookCheck = Compile(WebhookSchema);

function isProvider(value: ProviderSettings | PaymentProvider): value is PaymentProvider {
  return typeof (value as PaymentProvider).createCheckout === 'function';
}

const routes: FastifyPluginAsyncTypebox<{ issuer: CreditIssuer; webhookSecret: string }> = async (app, { issuer, webhookSecret }) => {
  app.get('/v1/packs', { schema: { response: { 200: PacksResponseSchema } } }, async () => ({ packs: issuer.listPacks() }));

  app.post('/v1/checkouts', { schema: { body: CheckoutRequestSchema, response: { 201: CheckoutCreatedSchema } } }, async (request, reply) => {
    const { variant_id: variantId, hwid, nonce } = request.body;
    const created = await issuer.startCheckout({ variantId, hwid, nonce });
    return reply.code(201).send(created);
  });

  app.get('/v1/checkouts/:nonce', {
    schema: { params: CheckoutParamsSchema, querystring: CheckoutQuerySchema, response: { 200: CheckoutMintedSchema, 202: CheckoutPendingSchema } },
  }, async (request, reply) => {
    const status = issuer.checkoutStatus(request.params.nonce, request.query.hwid);
    return reply.code(status.status === 'pending' ? 202 : 200).send(status);
  });

  app.post('/v1/credits/:credit_id/unbind', {
    schema: { params: CreditParamsSchema, body: UnbindRequestSchema, response: { 200: TokenResponseSchema } },
  }, async (request) => ({ token: issuer.unbind(request.params.credit_id, request.body.token, request.body.hwid) }));

  app.post('/v1/credits/bind', { schema: { body: BindRequestSchema, response: { 200: TokenResponseSchema } } }, async (request) => (
    { token: issuer.bind(request.body.token, request.body.hwid) }
  ));

  // Its own scope: the body stays the raw bytes the provider signed, whatever its content type.
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: WEBHOOK_BODY_LIMIT }, (_request, body, done) => done(null, body));
    scope.post('/v1/webhooks/payment', async (request) => {
      const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      if (!isValidWebhookSignature(webhookSecret, raw, request.headers[SIGNATURE_HEADER])) {
        request.log.warn('webhook with a missing or invalid signature refused');
        throw new ProblemError(401, `${SIGNATURE_HEADER}: missing or not the HMAC-SHA256 of the body with the webhook secret`);
      }
      let document: unknown;
      try {
        document = JSON.parse(raw.toString('utf8'));
      } catch {
        throw new ProblemError(400, 'webhook body is not JSON');
      }
      if (!webhookCheck.Check(document)) {
        throw validationProblem(fieldErrorsFromSchemaIssues(webhookCheck.Errors(document) as unknown as SchemaValidationIssue[], 'body'));
      }
      const webhook = document;
      if (webhook.meta.event_name !== 'order_created') return { outcome: 'ignored', detail: `event ${webhook.meta.event_name} is not handled` };
      const attributes = webhook.data?.attributes;
      if (webhook.data?.id === undefined || attributes === undefined) throw new ProblemError(400, 'data.id: an order_created event needs the order id and attributes');
      if (attributes.status !== 'paid') return { outcome: 'ignored', detail: `order status ${String(attributes.status)} is not paid` };
      const nonce = webhook.meta.custom_data?.nonce;
      const variantId = attributes.first_order_item?.variant_id;
      return issuer.recordPaidOrder({
        orderId: String(webhook.data.id),
        nonce: typeof nonce === 'string' ? nonce : null,
        variantId: variantId === undefined ? null : String(variantId),
      });
    });
  });
};

export async function buildLicenseServer(options: LicenseServerOptions): Promise<FastifyInstance> {
  // Typed as the default instance: a pino Logger parameter would make it incompatible with the helpers.
  const app = Fastify({
    ...(options.logger !== undefined ? { loggerInstance: options.logger } : { logger: false }),
    bodyLimit: BODY_LIMIT,
  }) as unknown as FastifyInstance;
  const store = new LicenseServerStore(options.dbPath);
  app.addHook('onClose', async () => store.close());
  const issuer = new CreditIssuer({
    store,
    privateKey: options.privateKey,
    packs: options.packs,
    provider: isProvider(options.provider) ? options.provider : new LemonSqueezyCheckouts(options.provider),
    log: app.log,
    now: options.now,
  });
  app.setValidatorCompiler(TypeBoxValidatorCompiler);
  installProblemHandlers(app, 'the license server log');
  await app.withTypeProvider<TypeBoxTypeProvider>().register(routes, { issuer, webhookSecret: options.webhookSecret });
  await app.ready();
  return app;
}

export interface RunningLicenseServer {
  app: FastifyInstance;
  /** e.g. http://127.0.0.1:9846 */
  url: string;
  close(): Promise<void>;
}

/** Listens on host:port (port 0 picks a free one). */
export async function startLicenseServer(options: LicenseServerOptions & { host?: string; port?: number }): Promise<RunningLicenseServer> {
  const { host = '127.0.0.1', port = 0, ...serverOptions } = options;
  const app = await buildLicenseServer(serverOptions);
  try {
    await app.listen({ host, port });
  } catch (error) {
    await app.close();
    throw error;
  }
  const address = app.server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return { app, url: `http://${shownHost}:${address.port}`, close: () => app.close() };
}
