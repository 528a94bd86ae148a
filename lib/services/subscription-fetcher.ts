/**
 * Fetches a subscription's bundle with the limits a background poll of someone else's server needs:
 * only https (or http to this machine), one deadline for the whole exchange, a size cap enforced while
 * reading, few redirects and each one checked against the same URL policy, and ETag reuse.
 *
 * Redirects are followed by hand (`redirect: 'manual'`) so that a redirect to a forbidden URL is refused
 * before anything is sent there.
 */
import { isLoopbackHost } from '../http/host-check.js';

export const DEFAULT_FETCH_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_BUNDLE_BYTES = 1024 * 1024;
export const DEFAULT_MAX_REDIRECTS = 3;

export type FetchFailureKind = 'timeout' | 'too_large' | 'http_status' | 'redirect' | 'not_json' | 'network';

/** A poll that produced no bundle. `status` is the HTTP status the API answers with (502 or 504). */
export class SubscriptionFetchError extends Error {
  readonly kind: FetchFailureKind;
  constructor(kind: FetchFailureKind, message: string) {
    super(message);
    this.name = 'SubscriptionFetchError';
    this.kind = kind;
  }

  get status(): 502 | 504 {
    return this.kind === 'timeout' ? 504 : 502;
  }
}

export type FetchResult =
  | { notModified: true }
  | { notModified: false; body: unknown; etag: string | null };

export interface FetchLimits {
  timeoutMs: number;
  maxBytes: number;
  maxRedirects: number;
}

/** Why `raw` may not be fetched, or null when it may (https anywhere, http to a loopback host only). */
export function subscriptionUrlProblem(raw: string): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'must be an absolute URL';
  }
  if (url.username !== '' || url.password !== '') return 'must not carry credentials';
  if (url.protocol === 'https:') return null;
  if (url.protocol === 'http:') {
    return isLoopbackHost(url.host) ? null : 'http is allowed only to a loopback host (localhost, 127.0.0.0/8, [::1]); use https';
  }
  return `scheme ${url.protocol.replace(/:$/, '')} is not allowed; use https`;
}

/** `cancel`: the owner is shutting down; the fetch stops and fails as a network error. */
export async function fetchBundle(url: string, etag: string | null, limits: FetchLimits, cancel?: AbortSignal): Promise<FetchResult> {
  const deadline = AbortSignal.timeout(limits.timeoutMs);
  const signal = cancel === undefined ? deadline : AbortSignal.any([deadline, cancel]);
  try {
    return await fetchFollowing(url, etag, limits, signal);
  } catch (error) {
    if (error instanceof SubscriptionFetchError) throw error;
    if (deadline.aborted) throw new SubscriptionFetchError('timeout', `no complete answer from ${url} within ${limits.timeoutMs} ms`);
    const cause = (error as { cause?: { message?: string } }).cause?.message;
    throw new SubscriptionFetchError('network', `fetching ${url} failed: ${cause ?? (error as Error).message}`);
  }
}

async function fetchFollowing(startUrl: string, etag: string | null, limits: FetchLimits, signal: AbortSignal): Promise<FetchResult> {
  let url = startUrl;
  for (let redirects = 0; ; redirects++) {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (etag !== null) headers['if-none-match'] = etag;
    const response = await fetch(url, { redirect: 'manual', signal, headers });
    if (response.status >= 300 && response.status < 400 && response.status !== 304) {
      await response.body?.cancel();
      const location = response.headers.get('location');
      if (location === null) throw new SubscriptionFetchError('redirect', `${url} answered ${response.status} without a Location`);
      if (redirects >= limits.maxRedirects) {
        throw new SubscriptionFetchError('redirect', `more than ${limits.maxRedirects} redirects starting at ${startUrl}`);
      }
      const next = new URL(location, url).toString();
      const problem = subscriptionUrlProblem(next);
      if (problem !== null) throw new SubscriptionFetchError('redirect', `redirect to ${next} refused: ${problem}`);
      url = next;
      continue;
    }
    if (response.status === 304) {
      await response.body?.cancel();
      return { notModified: true };
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new SubscriptionFetchError('http_status', `${url} answered ${response.status}`);
    }
    const text = await readCapped(response, limits.maxBytes, url);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new SubscriptionFetchError('not_json', `${url} did not answer JSON`);
    }
    return { notModified: false, body, etag: response.headers.get('etag') };
  }
}

/** Reads the body, giving up as soon as it exceeds `maxBytes` (a declared Content-Length is checked first). */
export async function readCapped(response: Response, maxBytes: number, url: string, what = 'bundle'): Promise<string> {
  const tooLarge = (): SubscriptionFetchError => new SubscriptionFetchError('too_large', `${what} too large: ${url} sent more than ${maxBytes} bytes`);
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel();
    throw tooLarge();
  }
  if (response.body === null) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
