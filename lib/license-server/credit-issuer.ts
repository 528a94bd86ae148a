/**
 * What the license server does with credits: reserves checkouts, mints one credit per paid order, and
 * moves credits between machines (unbind gives an unbound token, bind turns it into a bound one with the
 * next binding number). The private key never leaves this object. Every decision reads and writes the
 * store in one synchronous transaction, so two requests for the same credit cannot both win.
 */
import { randomUUID, createPublicKey, type KeyObject } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import { ProblemError } from '../http/problem.js';
import { signToken, TokenError, verifyToken, type TokenPayload } from '../license/token.js';
import type { Pack } from './schemas.js';
import type { CreditRow, LicenseServerStore } from './store.js';
import { ProviderError, type PaymentProvider } from './provider.js';

export interface PaidOrder {
  orderId: string;
  /** From the webhook's meta.custom_data; null when the order did not come through our checkout. */
  nonce: string | null;
  /** The variant actually paid for (first order item); null when the webhook does not say. */
  variantId: string | null;
}

export type OrderResult =
  | { outcome: 'minted'; creditId: string }
  | { outcome: 'replay' }
  | { outcome: 'unmatched'; detail: string };

export interface CreditIssuerOptions {
  store: LicenseServerStore;
  privateKey: KeyObject;
  packs: readonly Pack[];
  provider: PaymentProvider;
  log: FastifyBaseLogger;
  /** Epoch milliseconds (tests). */
  now?: () => number;
}

export class CreditIssuer {
  readonly publicKey: KeyObject;
  private readonly store: LicenseServerStore;
  private readonly privateKey: KeyObject;
  private readonly packs: ReadonlyMap<string, Pack>;
  private readonly provider: PaymentProvider;
  private readonly log: FastifyBaseLogger;
  private readonly now: () => number;

  constructor(options: CreditIssuerOptions) {
    this.store = options.store;
    this.privateKey = options.privateKey;
    this.publicKey = createPublicKey(options.privateKey);
    this.packs = new Map(options.packs.map((pack) => [pack.variant_id, pack]));
    this.provider = options.provider;
    this.log = options.log;
    this.now = options.now ?? Date.now;
  }

  listPacks(): Pack[] {
    return [...this.packs.values()];
  }

  /** Reserves the nonce first (a concurrent duplicate gets 409), then asks the provider for a checkout URL. */
  async startCheckout(request: { variantId: string; hwid: string; nonce: string }): Promise<{ nonce: string; checkout_url: string }> {
    if (!this.packs.has(request.variantId)) {
      throw new ProblemError(400, `variant_id: unknown pack ${JSON.stringify(request.variantId)} (GET /v1/packs lists them)`, {
        errors: [{ field: 'variant_id', message: 'unknown pack' }],
      });
    }
    if (!this.store.reserveCheckout(request.nonce, request.variantId, request.hwid, this.isoNow())) {
      throw new ProblemError(409, 'nonce: a checkout with this nonce exists already; make a new nonce');
    }
    let url: string;
    try {
      ({ url } = await this.provider.createCheckout({ variantId: request.variantId, nonce: request.nonce }));
    } catch (error) {
      this.store.dropUnstartedCheckout(request.nonce);
      if (error instanceof ProviderError) {
        this.log.warn({ err: error }, 'payment provider checkout failed');
        throw new ProblemError(error.kind === 'timeout' ? 504 : 502, error.message);
      }
      throw error;
    }
    this.store.setCheckoutUrl(request.nonce, url);
    return { nonce: request.nonce, checkout_url: url };
  }

  checkoutStatus(nonce: string, hwid: string): { status: 'pending' } | { status: 'minted'; token: string } {
    const checkout = this.store.getCheckout(nonce);
    // A nonce reserved while its provider call is in flight is not a checkout yet.
    if (checkout === undefined || checkout.checkout_url === null) throw new ProblemError(404, 'no checkout with this nonce');
    if (checkout.hwid !== hwid) throw new ProblemError(403, 'this checkout was made for another hwid');
    if (checkout.token === null) return { status: 'pending' };
    return { status: 'minted', token: checkout.token };
  }

  /**
   * One credit per paid order, bound (binding 1) to the hwid of the checkout named by the order's nonce.
   * A replay of a processed order changes nothing. A paid order that cannot be matched (no such checkout,
   * a pack not sold here, a checkout already paid) is recorded as unmatched for the vendor to settle by hand:
   * retrying the webhook could not fix it.
   */
  recordPaidOrder(order: PaidOrder): OrderResult {
    const result = this.store.transaction((): OrderResult => {
      if (this.store.getOrder(order.orderId) !== undefined) return { outcome: 'replay' };
      const receivedAt = this.isoNow();
      const unmatched = (detail: string): OrderResult => {
        this.store.insertOrder({
          order_id: order.orderId, nonce: order.nonce, variant_id: order.variantId, outcome: 'unmatched', credit_id: null, detail,
          received_at: receivedAt,
        });
        return { outcome: 'unmatched', detail };
      };
      const checkout = order.nonce === null ? undefined : this.store.getCheckout(order.nonce);
      if (checkout === undefined) return unmatched(order.nonce === null ? 'order carries no nonce' : 'no checkout with this nonce');
      if (checkout.credit_id !== null) return unmatched(`checkout was paid already (credit ${checkout.credit_id})`);
      // The pack actually paid for decides the units, should it differ from the one the checkout asked for.
      const variantId = order.variantId ?? checkout.variant_id;
      const pack = this.packs.get(variantId);
      if (pack === undefined) return unmatched(`variant ${variantId} is not a pack of this server`);

      const creditId = randomUUID();
      const token = this.sign({ credit_id: creditId, units: pack.units, hwid: checkout.hwid, binding: 1, variant_id: pack.variant_id });
      this.store.insertCredit({
        credit_id: creditId, units: pack.units, variant_id: pack.variant_id, order_id: order.orderId, hwid: checkout.hwid, binding: 1,
        unbound_from: null, token, created_at: receivedAt, updated_at: receivedAt,
      });
      this.store.setCheckoutMinted(checkout.nonce, creditId, token);
      this.store.insertOrder({
        order_id: order.orderId, nonce: checkout.nonce, variant_id: variantId, outcome: 'minted', credit_id: creditId, detail: null,
        received_at: receivedAt,
      });
      return { outcome: 'minted', creditId };
    });
    if (result.outcome === 'unmatched') {
      this.log.warn({ order_id: order.orderId, nonce: order.nonce, variant_id: order.variantId, detail: result.detail }, 'paid order minted no credit; settle it by hand');
    } else if (result.outcome === 'minted') {
      this.log.info({ order_id: order.orderId, credit_id: result.creditId }, 'credit minted');
    }
    return result;
  }

  /**
   * The holder gives a credit up: its current bound token in, an unbound token (same binding number) out.
   * A retry by the same machine after a lost answer gets the same unbound token again.
   */
  unbind(creditId: string, tokenText: string, hwid: string): string {
    const token = this.verify(tokenText);
    if (token.credit_id !== creditId) throw new ProblemError(400, 'token: is for another credit than the one in the path');
    if (token.hwid === null) throw new ProblemError(400, 'token: is an unbound token; unbind takes the bound token the machine holds');
    if (token.hwid !== hwid) throw new ProblemError(403, 'token: is bound to another hwid than the one asking');
    return this.store.transaction(() => {
      const credit = this.existingCredit(creditId);
      if (credit.hwid === null && credit.binding === token.binding && credit.unbound_from === hwid) return credit.token;
      if (credit.hwid !== hwid || credit.binding !== token.binding) {
        throw new ProblemError(409, `token: is stale (the credit is at binding ${credit.binding}${credit.hwid === null ? ', unbound' : ''}; this token has binding ${token.binding})`);
      }
      const unbound = this.sign({ credit_id: credit.credit_id, units: credit.units, hwid: null, binding: credit.binding, variant_id: credit.variant_id });
      this.store.updateCreditHolder(credit.credit_id, { hwid: null, binding: credit.binding, unbound_from: hwid, token: unbound, updated_at: this.isoNow() });
      this.log.info({ credit_id: credit.credit_id, binding: credit.binding }, 'credit unbound');
      return unbound;
    });
  }

  /**
   * An unbound token becomes a token bound to `hwid` with binding + 1, once. The machine that bound it
   * may ask again (its answer may have been lost) and gets the same bound token; any other is refused.
   */
  bind(tokenText: string, hwid: string): string {
    const token = this.verify(tokenText);
    if (token.hwid !== null) throw new ProblemError(400, 'token: is a bound token; bind takes an unbound token (transfer the credit first)');
    return this.store.transaction(() => {
      const credit = this.existingCredit(token.credit_id);
      if (credit.hwid === hwid && credit.binding === token.binding + 1) return credit.token;
      if (credit.hwid !== null || credit.binding !== token.binding) {
        throw new ProblemError(409, 'credit already bound: this unbound token was used already');
      }
      const binding = credit.binding + 1;
      const bound = this.sign({ credit_id: credit.credit_id, units: credit.units, hwid, binding, variant_id: credit.variant_id });
      this.store.updateCreditHolder(credit.credit_id, { hwid, binding, unbound_from: null, token: bound, updated_at: this.isoNow() });
      this.log.info({ credit_id: credit.credit_id, binding }, 'credit bound');
      return bound;
    });
  }

  private verify(tokenText: string): TokenPayload {
    try {
      return verifyToken(tokenText, this.publicKey, { now: Math.floor(this.now() / 1000) });
    } catch (error) {
      if (error instanceof TokenError) throw new ProblemError(400, `token: ${error.message}`, { errors: [{ field: 'token', message: error.message }] });
      throw error;
    }
  }

  private existingCredit(creditId: string): CreditRow {
    const credit = this.store.getCredit(creditId);
    // A token signed by our key for a credit we do not know: the database was lost or replaced.
    if (credit === undefined) throw new ProblemError(404, 'no credit with this id on this license server');
    return credit;
  }

  private sign(fields: Omit<TokenPayload, 'v' | 'iat' | 'exp'>): string {
    return signToken({ v: 1, ...fields, iat: Math.floor(this.now() / 1000) }, this.privateKey);
  }

  private isoNow(): string {
    return new Date(this.now()).toISOString();
  }
}
