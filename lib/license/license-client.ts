/**
 * The service's client of the license server (protocol: docs/licensing.md). Every call has one deadline
 * for the whole exchange and a size cap on the answer, so the API never hangs on the server:
 * no server configured -> 503, deadline passed -> 504, unreachable / 5xx / an answer that is not what the
 * protocol says -> 502. A 4xx of the server is the caller's to map (it knows what the server refused).
 */
import { ProblemError } from '../http/problem.js';
import { readCapped, SubscriptionFetchError } from '../services/subscription-fetcher.js';
import {
  upstreamCheckout, upstreamCheckStatus, upstreamPacks, upstreamToken, type Pack,
} from '../schemas/license.js';

export const DEFAULT_LICENSE_SERVER_TIMEOUT_MS = 10_000;
/** The server's answers are a few hundred bytes; a pack list is the largest. */
const MAX_ANSWER_BYTES = 256 * 1024;

/** A 4xx problem of the license server: what it refused and why. */
export class UpstreamRefusal extends Error {
  constructor(readonly status: number, readonly detail: string) {
    super(detail);
    this.name = 'UpstreamRefusal';
  }
}

export type CheckStatus = { status: 'pending' } | { status: 'minted'; token: string };

export interface LicenseClientOptions {
  /** Read at every call: [license] server_url hot-reloads. */
  serverUrl: () => string;
  timeoutMs?: number;
}

export class LicenseServerClient {
  private readonly serverUrl: () => string;
  private readonly timeoutMs: number;

  constructor(options: LicenseClientOptions) {
    this.serverUrl = options.serverUrl;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_LICENSE_SERVER_TIMEOUT_MS;
  }

  async packs(): Promise<Pack[]> {
    const answer = await this.call('GET', 'v1/packs', undefined, [200], upstreamPacks);
    return answer.body.packs;
  }

  async createCheckout(variantId: string, hwid: string, nonce: string): Promise<string> {
    const answer = await this.call('POST', 'v1/checkouts', { variant_id: variantId, hwid, nonce }, [201, 200], upstreamCheckout);
    return answer.body.checkout_url;
  }

  async checkoutStatus(nonce: string, hwid: string): Promise<CheckStatus> {
    const path = `v1/checkouts/${encodeURIComponent(nonce)}?hwid=${encodeURIComponent(hwid)}`;
    const answer = await this.call('GET', path, undefined, [200, 202], upstreamCheckStatus);
    if (answer.status === 202) return { status: 'pending' };
    if (answer.body.status !== 'minted') throw this.badAnswer('answered 200 without a minted token');
    return answer.body;
  }

  async unbind(creditId: string, token: string, hwid: string): Promise<string> {
    const answer = await this.call('POST', `v1/credits/${encodeURIComponent(creditId)}/unbind`, { token, hwid }, [200], upstreamToken);
    return answer.body.token;
  }

  async bind(token: string, hwid: string): Promise<string> {
    const answer = await this.call('POST', 'v1/credits/bind', { token, hwid }, [200], upstreamToken);
    return answer.body.token;
  }

  private base(): URL {
    const raw = this.serverUrl();
    if (raw === '') {
      throw new ProblemError(503, 'no license server is configured: set [license] server_url in config.toml (or PUT /api/v1/config)');
    }
    // A base with a path ("https://host/netclamp") keeps it: relative resolution needs the trailing slash.
    return new URL(raw.endsWith('/') ? raw : `${raw}/`);
  }

  private badAnswer(what: string): ProblemError {
    return new ProblemError(502, `the license server at ${this.serverUrl()} ${what}`);
  }

  private async call<T>(
    method: 'GET' | 'POST', path: string, body: unknown, expected: readonly number[], validator: { Check(value: unknown): value is T },
  ): Promise<{ status: number; body: T }> {
    const url = new URL(path, this.base()).toString();
    const deadline = AbortSignal.timeout(this.timeoutMs);
    let status: number;
    let text: string;
    try {
      const response = await fetch(url, {
        method, signal: deadline, redirect: 'error',
        headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      status = response.status;
      text = await readCapped(response, MAX_ANSWER_BYTES, url, 'license server answer');
    } catch (error) {
      if (deadline.aborted) {
        throw new ProblemError(504, `the license server at ${this.serverUrl()} did not answer within ${this.timeoutMs / 1000} s`);
      }
      if (error instanceof SubscriptionFetchError) throw this.badAnswer(`sent an answer over ${MAX_ANSWER_BYTES} bytes`);
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new ProblemError(502, `the license server at ${this.serverUrl()} is unreachable: ${cause?.code ?? cause?.message ?? (error as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    if (status >= 400 && status < 500 && status !== 429) {
      const detail = (parsed as { detail?: unknown } | undefined)?.detail;
      throw new UpstreamRefusal(status, typeof detail === 'string' ? detail : `HTTP ${status}`);
    }
    if (!expected.includes(status)) {
      const detail = (parsed as { detail?: unknown } | undefined)?.detail;
      throw this.badAnswer(`answered ${status}${typeof detail === 'string' ? `: ${detail}` : ''}`);
    }
    if (!validator.Check(parsed)) throw this.badAnswer(`answered ${method} /${path.split('?')[0]} with something that is not the protocol's answer`);
    return { status, body: parsed };
  }
}
