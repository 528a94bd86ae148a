/**
 * Licensing and billing on this machine (contract, Licensing; decisions in docs/api.md "Licensing").
 *
 * Credits are vendor-signed tokens bound to this machine's HWID; `cap` = baseline + units of the credits
 * that count here (verify with the vendor key, bound to this HWID, not expired: checked again at every
 * read, so a credit whose token expires or was signed by another key stops counting by itself).
 * The service is also the clamp-slot gate of the rule, quota and group services.
 *
 * Transfer, rebind, checkout and check talk to the license server; a credit leaves the cap only once the
 * server confirmed the unbind, but while an unbind is in flight its units are already held back from new
 * slots, so that nothing admitted meanwhile can push `used` past the cap the transfer leads to.
 */
import { randomBytes, type KeyObject } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import { ProblemError } from '../http/problem.js';
import { parseToken, publicKeyFromRaw, TokenError, verifyToken, type TokenPayload } from '../license/token.js';
import { LicenseServerClient, UpstreamRefusal } from '../license/license-client.js';
import { machineHwid, type MachineHwid, type NativeHwidInputs } from '../license/hwid.js';
import { TEST_HWID_SEED_ENV, TEST_VENDOR_KEY_ENV, usesTestSettings, type LicenseSettings } from '../license/settings.js';
import { VENDOR_PUBLIC_KEY } from '../license/vendor-key.js';
import type {
  Activation, CheckMinted, Credit, CreditState, LicenseState, Pack, Transfer, TransferredCredit,
} from '../schemas/license.js';
import type { LicenseStore, StoredCredit } from '../store/license-store.js';
import type { SlotGate } from './clamp-slots.js';
import type { EventBus } from './event-bus.js';

/** Clamp slots every machine has without a credit. */
export const BASELINE_SLOTS = 3;
/** How long GET /billing/packs reuses the server's list. */
export const PACKS_CACHE_MS = 5 * 60_000;

export interface LicenseServiceOptions {
  store: LicenseStore;
  client: LicenseServerClient;
  events: EventBus;
  log: FastifyBaseLogger;
  machine: MachineHwid;
  vendorKey: KeyObject;
  /** A test vendor key or HWID seed is in effect (reported by GET /license). */
  testSettings: boolean;
  /** Epoch milliseconds (token expiry, packs cache). */
  now?: () => number;
  packsCacheMs?: number;
}

type TokenUse = 'activate' | 'rebind';

function tokenProblem(detail: string): ProblemError {
  return new ProblemError(400, `token: ${detail}`, { errors: [{ field: 'token', message: detail }] });
}

/** The 400 of a token that does not verify, naming the reason first. */
function refusedToken(error: TokenError): ProblemError {
  switch (error.reason) {
    case 'signature': return tokenProblem(`bad signature: ${error.message}`);
    case 'expired': return tokenProblem(`expired: ${error.message}`);
    default: return tokenProblem(`malformed: ${error.message}`);
  }
}

function short(hwid: string): string {
  return `${hwid.slice(0, 12)}…`;
}

export class LicenseService implements SlotGate {
  private readonly store: LicenseStore;
  private readonly client: LicenseServerClient;
  private readonly events: EventBus;
  private readonly log: FastifyBaseLogger;
  private readonly machine: MachineHwid;
  private readonly vendorKey: KeyObject;
  private readonly testSettings: boolean;
  private readonly now: () => number;
  private readonly packsCacheMs: number;
  /** Credits whose unbind is in flight: held back from new slots until the server answers. */
  private readonly leaving = new Set<string>();
  private packsCache: { at: number; packs: Pack[] } | null = null;

  constructor(options: LicenseServiceOptions) {
    this.store = options.store;
    this.client = options.client;
    this.events = options.events;
    this.log = options.log;
    this.machine = options.machine;
    this.vendorKey = options.vendorKey;
    this.testSettings = options.testSettings;
    this.now = options.now ?? Date.now;
    this.packsCacheMs = options.packsCacheMs ?? PACKS_CACHE_MS;
  }

  get hwid(): string {
    return this.machine.hwid;
  }

  // ---- reads -------------------------------------------------------------------------------------

  state(): LicenseState {
    const credits = this.store.listCredits().map((credit) => this.present(credit));
    return {
      cap: this.cap(), used: this.store.clampSlotsUsed(), baseline: BASELINE_SLOTS, hwid: this.hwid, credits,
      transferred: this.store.listRetired().map((retired): TransferredCredit => ({
        credit_id: retired.credit_id, units: retired.units, binding: retired.binding,
        transferred_at: retired.transferred_at, token: retired.unbound_token,
      })),
      test_settings: this.testSettings,
    };
  }

  hwidInfo(): { hwid: string; inputs: string[] } {
    return { hwid: this.hwid, inputs: this.machine.inputs };
  }

  /** baseline + units of every credit that counts here. */
  cap(): number {
    return BASELINE_SLOTS + this.countingUnits(() => true);
  }

  // ---- the slot gate -----------------------------------------------------------------------------

  requireSlots(added: number, what: string, options: { written?: boolean } = {}): void {
    if (added <= 0) return;
    const used = this.store.clampSlotsUsed() - (options.written === true ? added : 0);
    const cap = BASELINE_SLOTS + this.countingUnits((credit) => !this.leaving.has(credit.credit_id));
    if (used + added <= cap) return;
    const held = this.leaving.size > 0 ? ' (a credit being transferred no longer counts for new slots)' : '';
    throw new ProblemError(402, `${what} needs ${added} more clamp slot${added === 1 ? '' : 's'}: ${used} of ${cap} are in use${held}. `
      + 'Enabled LIMIT rules and enabled quotas take a slot each; BLOCK and ALLOW rules are free. Disable one, '
      + 'or add a credit (POST /api/v1/license/activate, or buy one: GET /api/v1/billing/packs, POST /api/v1/billing/checkout).');
  }

  // ---- credits -----------------------------------------------------------------------------------

  /** POST /license/activate: a bound token for this machine. Idempotent; a refusal changes nothing. */
  activate(token: string): Activation {
    return this.activateVerified(this.verify(token, 'activate'), token);
  }

  /**
   * POST /license/transfer/{credit_id}: the server unbinds the credit and hands out an unbound token;
   * only then does the credit leave this machine. Asked again for a credit already transferred, it
   * answers the same unbound token (a lost answer must not lose the credit).
   */
  async transfer(creditId: string): Promise<Transfer> {
    const credit = this.store.getCredit(creditId);
    if (credit === undefined) {
      const retired = this.store.getRetired(creditId);
      if (retired !== undefined) {
        return { credit_id: creditId, units: retired.units, token: retired.unbound_token, cap: this.cap(), used: this.store.clampSlotsUsed() };
      }
      throw new ProblemError(404, `credit ${creditId} is not on this machine`);
    }
    const state = this.credentialOf(credit).state;
    if (state !== 'active') {
      throw new ProblemError(409, `credit ${creditId} does not count on this machine (${state}); only an active credit can be transferred`);
    }
    if (this.leaving.has(creditId)) throw new ProblemError(409, `a transfer of credit ${creditId} is already under way`);
    const used = this.store.clampSlotsUsed();
    const capAfter = this.cap() - credit.units;
    if (used > capAfter) {
      throw new ProblemError(409, `${used} clamp slots are in use and the cap without credit ${creditId} would be ${capAfter}: `
        + `disable or delete ${used - capAfter} LIMIT rule(s) or quota(s) first; nothing was changed`);
    }
    this.leaving.add(creditId);
    let unbound: string;
    try {
      unbound = await this.client.unbind(creditId, credit.token, this.hwid);
      const payload = this.serverToken(unbound, 'an unbound token');
      if (payload.credit_id !== creditId || payload.hwid !== null || payload.binding !== credit.binding) {
        throw new ProblemError(502, `the license server answered the unbind of credit ${creditId} with a token for `
          + `credit ${payload.credit_id}, hwid ${payload.hwid ?? 'null'}, binding ${payload.binding}; the credit stays here`);
      }
    } catch (error) {
      throw this.upstreamRefusal(error, `unbind credit ${creditId}`);
    } finally {
      this.leaving.delete(creditId);
    }
    this.store.transaction(() => {
      this.store.deleteCredit(creditId);
      this.store.putRetired({
        credit_id: creditId, binding: credit.binding, units: credit.units, unbound_token: unbound,
        transferred_at: new Date(this.now()).toISOString(),
      });
    });
    this.announce('transferred', creditId);
    return { credit_id: creditId, units: credit.units, token: unbound, cap: this.cap(), used: this.store.clampSlotsUsed() };
  }

  /** POST /license/rebind: the server binds an unbound token to this machine; the bound token is activated. */
  async rebind(token: string): Promise<Activation> {
    const payload = this.verify(token, 'rebind');
    const here = this.store.getCredit(payload.credit_id);
    if (here !== undefined && here.binding > payload.binding && this.credentialOf(here).state === 'active') {
      // This machine already bound this very token: answer as activation does, without asking again.
      return { credit: this.present(here), changed: false, cap: this.cap(), used: this.store.clampSlotsUsed() };
    }
    let bound: string;
    try {
      bound = await this.client.bind(token, this.hwid);
    } catch (error) {
      throw this.upstreamRefusal(error, `bind credit ${payload.credit_id}`);
    }
    return this.activateFromServer(bound, `bind of credit ${payload.credit_id}`);
  }

  // ---- billing -----------------------------------------------------------------------------------

  /** POST /billing/checkout: a checkout URL of the payment provider, for a nonce tied to this HWID. */
  async checkout(variantId: string): Promise<{ checkout_url: string; nonce: string }> {
    const nonce = randomBytes(24).toString('base64url');
    // Recorded first: a checkout the server knows about is always one this machine can poll.
    this.store.insertCheckout({ nonce, variant_id: variantId, created_at: new Date(this.now()).toISOString(), credit_id: null });
    let url: string;
    try {
      url = await this.client.createCheckout(variantId, this.hwid, nonce);
      if (!/^https?:\/\//i.test(url)) throw new ProblemError(502, 'the license server answered a checkout URL that is not http(s)');
    } catch (error) {
      this.store.deleteCheckout(nonce);
      if (error instanceof UpstreamRefusal && error.status === 400) {
        const message = `the license server refused it: ${error.detail}`;
        throw new ProblemError(400, `variant_id: ${message}`, { errors: [{ field: 'variant_id', message }] });
      }
      throw this.upstreamRefusal(error, 'create a checkout');
    }
    return { checkout_url: url, nonce };
  }

  /** GET /billing/check/{nonce}: pending, or the minted credit, activated here (idempotent). */
  async check(nonce: string): Promise<{ status: 'pending' } | CheckMinted> {
    const checkout = this.store.getCheckout(nonce);
    if (checkout === undefined) throw new ProblemError(404, `no checkout ${nonce} was started on this machine`);
    if (checkout.credit_id !== null) {
      const credit = this.store.getCredit(checkout.credit_id);
      if (credit !== undefined) return { status: 'minted', token: credit.token, ...this.activationOf(credit, false) };
    }
    let answer;
    try {
      answer = await this.client.checkoutStatus(nonce, this.hwid);
    } catch (error) {
      throw this.upstreamRefusal(error, `report checkout ${nonce}`);
    }
    if (answer.status === 'pending') return answer;
    const activation = this.activateFromServer(answer.token, `checkout ${nonce}`);
    this.store.completeCheckout(nonce, activation.credit.credit_id);
    return { status: 'minted', token: answer.token, ...activation };
  }

  /** GET /billing/packs, from a cache of a few minutes. */
  async packs(): Promise<Pack[]> {
    const now = this.now();
    if (this.packsCache !== null && now - this.packsCache.at < this.packsCacheMs) return this.packsCache.packs;
    let packs: Pack[];
    try {
      packs = await this.client.packs();
    } catch (error) {
      throw this.upstreamRefusal(error, 'list packs');
    }
    this.packsCache = { at: now, packs };
    return packs;
  }

  // ---- internals ---------------------------------------------------------------------------------

  private nowSeconds(): number {
    return Math.floor(this.now() / 1000);
  }

  /** A token the caller hands in: verified, and bound (activate) or unbound (rebind), or a 400. */
  private verify(token: string, use: TokenUse): TokenPayload {
    let payload: TokenPayload;
    try {
      payload = verifyToken(token, this.vendorKey, { now: this.nowSeconds() });
    } catch (error) {
      if (error instanceof TokenError) throw refusedToken(error);
      throw error;
    }
    if (use === 'rebind' && payload.hwid !== null) {
      throw tokenProblem(payload.hwid === this.hwid
        ? 'already bound to this machine: use POST /api/v1/license/activate'
        : `bound to another machine (hwid ${short(payload.hwid)}): transfer it there first (POST /api/v1/license/transfer/${payload.credit_id})`);
    }
    if (use === 'activate') {
      if (payload.hwid === null) {
        throw tokenProblem('unbound (not tied to a machine): use POST /api/v1/license/rebind to bind it to this machine');
      }
      if (payload.hwid !== this.hwid) {
        throw tokenProblem(`bound to another machine (hwid ${short(payload.hwid)}; this machine is ${short(this.hwid)}): `
          + 'transfer it there (POST /api/v1/license/transfer/{credit_id}) and rebind the unbound token here');
      }
    }
    return payload;
  }

  private activateVerified(payload: TokenPayload, token: string): Activation {
    const retired = this.store.getRetired(payload.credit_id);
    if (retired !== undefined && payload.binding <= retired.binding) {
      throw tokenProblem(`stale binding: credit ${payload.credit_id} was transferred away from this machine at binding `
        + `${retired.binding}; this token has binding ${payload.binding}. Rebind the unbound token instead`);
    }
    const existing = this.store.getCredit(payload.credit_id);
    if (existing !== undefined) {
      if (payload.binding < existing.binding) {
        throw tokenProblem(`stale binding: credit ${payload.credit_id} is active here with binding ${existing.binding}; this token has binding ${payload.binding}`);
      }
      if (payload.binding === existing.binding && this.credentialOf(existing).state === 'active') {
        return this.activationOf(existing, false);
      }
    }
    const credit: StoredCredit = {
      credit_id: payload.credit_id, units: payload.units, variant_id: payload.variant_id,
      token, binding: payload.binding, activated_at: new Date(this.now()).toISOString(),
    };
    this.store.transaction(() => {
      this.store.putCredit(credit);
      this.store.deleteRetired(credit.credit_id);
    });
    this.announce('activated', credit.credit_id);
    return this.activationOf(credit, true);
  }

  /** A bound token the license server handed back: it must activate here, or the server misbehaved (502). */
  private activateFromServer(token: string, what: string): Activation {
    try {
      const payload = this.verify(token, 'activate');
      return this.activateVerified(payload, token);
    } catch (error) {
      if (error instanceof ProblemError && error.status === 400) {
        throw new ProblemError(502, `the license server's token for the ${what} does not activate here: ${error.detail}`);
      }
      throw error;
    }
  }

  /** A token the server answered with: verified, or a 502. */
  private serverToken(token: string, what: string): TokenPayload {
    try {
      return verifyToken(token, this.vendorKey, { now: this.nowSeconds() });
    } catch (error) {
      throw new ProblemError(502, `the license server answered ${what} that does not verify: ${(error as Error).message}`);
    }
  }

  private upstreamRefusal(error: unknown, action: string): Error {
    if (!(error instanceof UpstreamRefusal)) return error as Error;
    // What the server refused is a conflict with its records (stale binding, already bound, other
    // machine) or a checkout it does not know: the user's next step, not a fault of this service.
    if (error.status === 404) return new ProblemError(404, `the license server does not know it (${action}): ${error.detail}`);
    if (error.status === 400) return new ProblemError(400, `token: the license server refused to ${action}: ${error.detail}`, {
      errors: [{ field: 'token', message: error.detail }],
    });
    return new ProblemError(409, `the license server refused to ${action} (HTTP ${error.status}): ${error.detail}; nothing was changed here`);
  }

  private credentialOf(credit: StoredCredit): { state: CreditState; exp: number | undefined } {
    try {
      const payload = verifyToken(credit.token, this.vendorKey, { now: this.nowSeconds() });
      return { state: payload.hwid === this.hwid ? 'active' : 'other_hwid', exp: payload.exp };
    } catch (error) {
      if (error instanceof TokenError && error.reason === 'expired') return { state: 'expired', exp: parseToken(credit.token).payload.exp };
      return { state: 'bad_signature', exp: undefined };
    }
  }

  private countingUnits(include: (credit: StoredCredit) => boolean): number {
    let units = 0;
    for (const credit of this.store.listCredits()) {
      if (include(credit) && this.credentialOf(credit).state === 'active') units += credit.units;
    }
    return units;
  }

  private present(credit: StoredCredit): Credit {
    const { state, exp } = this.credentialOf(credit);
    return {
      credit_id: credit.credit_id, units: credit.units, variant_id: credit.variant_id, binding: credit.binding,
      activated_at: credit.activated_at, expires_at: exp === undefined ? null : new Date(exp * 1000).toISOString(), state,
    };
  }

  private activationOf(credit: StoredCredit, changed: boolean): Activation {
    return { credit: this.present(credit), changed, cap: this.cap(), used: this.store.clampSlotsUsed() };
  }

  private announce(reason: 'activated' | 'transferred', creditId: string): void {
    this.log.info({ creditId, reason }, `license credit ${reason}`);
    this.events.emit('license_changed', { used: this.store.clampSlotsUsed(), cap: this.cap(), reason, credit_id: creditId });
  }
}

export interface OpenLicenseOptions {
  store: LicenseStore;
  events: EventBus;
  log: FastifyBaseLogger;
  /** [license] server_url, read at every call (hot reload). */
  serverUrl: () => string;
  /** The engine's hwidInputs() when it has one (the Windows addon reads MachineGuid and SMBIOS there). */
  readNativeHwid?: (() => Promise<NativeHwidInputs>) | undefined;
  settings?: LicenseSettings | undefined;
}

/** The service with this machine's HWID and the vendor key (or the test settings, loudly). */
export async function openLicenseService(options: OpenLicenseOptions): Promise<LicenseService> {
  const settings = options.settings ?? {};
  const testSettings = usesTestSettings(settings);
  if (testSettings) {
    options.log.warn({
      testVendorKey: settings.testVendorKey !== undefined, testHwidSeed: settings.testHwidSeed !== undefined,
    }, `LICENSING TEST SETTINGS IN EFFECT (${TEST_VENDOR_KEY_ENV} / ${TEST_HWID_SEED_ENV}): credits are checked against a `
      + 'test key and/or a seeded HWID. Never run a real install like this.');
  }
  let vendorKey: KeyObject;
  try {
    vendorKey = publicKeyFromRaw(settings.testVendorKey ?? VENDOR_PUBLIC_KEY);
  } catch (error) {
    throw new Error(`${settings.testVendorKey !== undefined ? TEST_VENDOR_KEY_ENV : 'the built-in vendor key'}: ${(error as Error).message}`);
  }
  const machine = await machineHwid({ readNative: options.readNativeHwid, testSeed: settings.testHwidSeed });
  if (machine.inputs.length === 0) {
    options.log.warn('no machine identifier could be read for the HWID; it is the hash of the product salt alone');
  }
  return new LicenseService({
    store: options.store,
    client: new LicenseServerClient({ serverUrl: options.serverUrl, timeoutMs: settings.upstreamTimeoutMs }),
    events: options.events, log: options.log, machine, vendorKey, testSettings,
    now: settings.now, packsCacheMs: settings.packsCacheMs,
  });
}
