/**
 * Token buckets for endpoints that must not be hammered (billing: each call reaches the license server
 * and, for checkouts, the payment provider). A call over the budget is a 429 with Retry-After, before
 * anything else is done.
 */
import type { onRequestAsyncHookHandler } from 'fastify';
import { ProblemError } from './problem.js';

export interface BucketRate {
  /** Calls allowed in a burst. */
  burst: number;
  /** Calls added back per second. */
  perSecond: number;
}

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(private readonly rate: BucketRate, private readonly now: () => number = Date.now) {
    this.tokens = rate.burst;
    this.last = now();
  }

  /** Takes one call; returns 0 when allowed, else the whole seconds to wait for the next one. */
  take(): number {
    const now = this.now();
    this.tokens = Math.min(this.rate.burst, this.tokens + ((now - this.last) / 1000) * this.rate.perSecond);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - this.tokens) / this.rate.perSecond));
  }
}

/** An onRequest hook that answers 429 when `bucket` is empty. */
export function rateLimited(bucket: TokenBucket, what: string): onRequestAsyncHookHandler {
  return async () => {
    const wait = bucket.take();
    if (wait > 0) {
      throw new ProblemError(429, `${what} was called too often; retry in ${wait} s`, { headers: { 'Retry-After': String(wait) } });
    }
  };
}
