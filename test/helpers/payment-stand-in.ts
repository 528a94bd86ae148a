/**
 * A stand-in for the payment provider (Lemon Squeezy's shapes) on 127.0.0.1. It answers the checkout API
 * (checks the bearer key, the JSON:API content type, the store and the variant; records the nonce) and
 * plays the provider's side of a purchase: `pay` POSTs a correctly signed order_created webhook to the
 * license server, `payForged`/`payUnsigned` send a wrongly signed / unsigned one, `replay` re-sends an
 * earlier delivery byte for byte. `mode` makes the checkout API fail or hang.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { webhookSignature } from '../../lib/license-server/webhook-signature.js';

export interface StandInOptions {
  apiKey?: string;
  storeId?: string;
  webhookSecret?: string;
  /** Variant ids the store sells. */
  variants: readonly string[];
  /** Where webhooks go, e.g. `${licenseServer.url}/v1/webhooks/payment`; may be set later. */
  webhookUrl?: string;
}

export interface RecordedCheckout {
  id: string;
  nonce: string;
  variantId: string;
  storeId: string;
  url: string;
}

/** One webhook as sent: exactly these bytes with this X-Signature (absent when unsigned). */
export interface Delivery {
  body: string;
  signature: string | undefined;
}

export interface WebhookAnswer {
  status: number;
  body: unknown;
  delivery: Delivery;
}

export interface PayOptions {
  orderId?: string;
  /** Defaults to the variant of the checkout. */
  variantId?: string;
  status?: string;
  eventName?: string;
}

/** ok: answer checkouts; error: answer 500; hang: never answer (the client's timeout must fire). */
export type StandInMode = 'ok' | 'error' | 'hang';

export class PaymentStandIn {
  readonly apiKey: string;
  readonly storeId: string;
  readonly webhookSecret: string;
  readonly checkouts: RecordedCheckout[] = [];
  /** Every checkout API call, refused ones included. */
  readonly checkoutCalls: Array<{ status: number; authorization: string | undefined; contentType: string | undefined }> = [];
  webhookUrl: string | undefined;
  mode: StandInMode = 'ok';
  private readonly variants: ReadonlySet<string>;
  private readonly server: http.Server;
  private readonly hanging = new Set<http.ServerResponse>();
  private baseUrl = '';

  private constructor(options: StandInOptions) {
    this.apiKey = options.apiKey ?? `test-api-key-${randomUUID()}`;
    this.storeId = options.storeId ?? '4242';
    this.webhookSecret = options.webhookSecret ?? `test-webhook-secret-${randomUUID()}`;
    this.variants = new Set(options.variants);
    this.webhookUrl = options.webhookUrl;
    this.server = http.createServer((request, response) => this.handle(request, response));
  }

  static async start(options: StandInOptions): Promise<PaymentStandIn> {
    const standIn = new PaymentStandIn(options);
    await new Promise<void>((resolve, reject) => {
      standIn.server.once('error', reject);
      standIn.server.listen(0, '127.0.0.1', () => resolve());
    });
    standIn.baseUrl = `http://127.0.0.1:${(standIn.server.address() as AddressInfo).port}`;
    return standIn;
  }

  /** The provider API base URL to give the license server (NETCLAMP_LS_PROVIDER_URL). */
  get url(): string {
    return this.baseUrl;
  }

  async close(): Promise<void> {
    for (const response of this.hanging) response.destroy();
    this.hanging.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  checkoutFor(nonce: string): RecordedCheckout {
    const checkout = this.checkouts.find((c) => c.nonce === nonce);
    if (checkout === undefined) throw new Error(`the stand-in made no checkout for nonce ${nonce}`);
    return checkout;
  }

  /** The provider's order_created document for a checkout. */
  orderDocument(nonce: string, options: PayOptions = {}): Record<string, unknown> {
    const checkout = this.checkouts.find((c) => c.nonce === nonce);
    const variantId = options.variantId ?? checkout?.variantId ?? '0';
    const orderId = options.orderId ?? String(Math.floor(Math.random() * 1e9));
    return {
      meta: { event_name: options.eventName ?? 'order_created', custom_data: { nonce } },
      data: {
        type: 'orders',
        id: orderId,
        attributes: {
          store_id: Number(this.storeId),
          status: options.status ?? 'paid',
          total: 900,
          currency: 'EUR',
          // Lemon Squeezy sends variant ids as numbers; the server must take either.
          first_order_item: { order_id: Number(orderId), variant_id: /^\d+$/.test(variantId) ? Number(variantId) : variantId },
        },
      },
    };
  }

  /** A correctly signed order_created webhook for the checkout with this nonce. */
  pay(nonce: string, options: PayOptions = {}): Promise<WebhookAnswer> {
    const body = JSON.stringify(this.orderDocument(nonce, options));
    return this.deliver({ body, signature: webhookSignature(this.webhookSecret, body) });
  }

  /** Signed with another secret. */
  payForged(nonce: string, options: PayOptions = {}): Promise<WebhookAnswer> {
    const body = JSON.stringify(this.orderDocument(nonce, options));
    return this.deliver({ body, signature: webhookSignature(`not-${this.webhookSecret}`, body) });
  }

  payUnsigned(nonce: string, options: PayOptions = {}): Promise<WebhookAnswer> {
    return this.deliver({ body: JSON.stringify(this.orderDocument(nonce, options)), signature: undefined });
  }

  /** Sends an earlier delivery again, byte for byte (what a provider retry or an attacker's replay is). */
  replay(delivery: Delivery): Promise<WebhookAnswer> {
    return this.deliver(delivery);
  }

  /** Any body with any signature header. */
  async deliver(delivery: Delivery): Promise<WebhookAnswer> {
    if (this.webhookUrl === undefined) throw new Error('PaymentStandIn.webhookUrl is not set');
    const headers: Record<string, string> = { 'Content-Type': 'application/json', 'X-Event-Name': 'order_created' };
    if (delivery.signature !== undefined) headers['X-Signature'] = delivery.signature;
    const response = await request(this.webhookUrl, 'POST', delivery.body, headers);
    let body: unknown = response.text;
    try {
      body = JSON.parse(response.text);
    } catch {
      // not JSON; keep the text
    }
    return { status: response.status, body, delivery };
  }

  private handle(request: http.IncomingMessage, response: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      if (request.method !== 'POST' || request.url !== '/v1/checkouts') {
        this.answer(response, 404, { errors: [{ status: '404', title: 'Not Found' }] });
        return;
      }
      const call = { status: 0, authorization: request.headers.authorization, contentType: request.headers['content-type'] };
      this.checkoutCalls.push(call);
      const refuse = (status: number, detail: string): void => {
        call.status = status;
        this.answer(response, status, { errors: [{ status: String(status), detail }] });
      };
      if (this.mode === 'hang') {
        this.hanging.add(response);
        return;
      }
      if (this.mode === 'error') return refuse(500, 'stand-in told to fail');
      if (request.headers.authorization !== `Bearer ${this.apiKey}`) return refuse(401, 'Unauthenticated.');
      if (request.headers['content-type'] !== 'application/vnd.api+json') return refuse(415, 'content type must be application/vnd.api+json');
      let document: {
        data?: { type?: unknown; attributes?: { checkout_data?: { custom?: { nonce?: unknown } } };
          relationships?: { store?: { data?: { type?: unknown; id?: unknown } }; variant?: { data?: { type?: unknown; id?: unknown } } } };
      };
      try {
        document = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof document;
      } catch {
        return refuse(400, 'body is not JSON');
      }
      const data = document.data;
      const store = data?.relationships?.store?.data;
      const variant = data?.relationships?.variant?.data;
      const nonce = data?.attributes?.checkout_data?.custom?.nonce;
      if (data?.type !== 'checkouts') return refuse(422, 'data.type must be checkouts');
      if (store?.type !== 'stores' || store.id !== this.storeId) return refuse(422, 'unknown store');
      if (variant?.type !== 'variants' || typeof variant.id !== 'string' || !this.variants.has(variant.id)) return refuse(422, 'unknown variant');
      if (typeof nonce !== 'string') return refuse(422, 'checkout_data.custom.nonce missing');
      const id = randomUUID();
      const url = `${this.baseUrl}/checkout/${id}`;
      this.checkouts.push({ id, nonce, variantId: variant.id, storeId: store.id, url });
      call.status = 201;
      this.answer(response, 201, { jsonapi: { version: '1.0' }, data: { type: 'checkouts', id, attributes: { store_id: Number(this.storeId), url } } });
    });
  }

  private answer(response: http.ServerResponse, status: number, body: unknown): void {
    response.writeHead(status, { 'Content-Type': 'application/vnd.api+json' });
    response.end(JSON.stringify(body));
  }
}

/**
 * One request on its own connection: a pooled keep-alive socket to a server that restarted in between
 * would fail with "other side closed".
 */
export function request(
  url: string, method: string, payload?: string, headers: Record<string, string> = {},
): Promise<{ status: number; text: string; contentType: string | null }> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(url, {
      method, agent: false,
      headers: payload === undefined ? headers : { 'Content-Type': 'application/json', ...headers, 'Content-Length': String(Buffer.byteLength(payload)) },
    }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({
        status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), contentType: response.headers['content-type'] ?? null,
      }));
      response.on('error', reject);
    });
    outgoing.on('error', reject);
    outgoing.end(payload);
  });
}
