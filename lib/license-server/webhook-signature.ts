/**
 * The provider signs each webhook with X-Signature = lowercase hex HMAC-SHA256(secret, raw body). It is
 * checked on the bytes exactly as received, before anything parses them.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-signature';

export function webhookSignature(secret: string, body: Uint8Array | string): string {
  return createHmac('sha256', secret).update(body).digest('hex');
}

/** Constant-time comparison; a missing, repeated or malformed header is simply not valid. */
export function isValidWebhookSignature(secret: string, body: Uint8Array, header: string | string[] | undefined): boolean {
  if (typeof header !== 'string' || !/^[0-9a-f]{64}$/.test(header)) return false;
  const expected = createHmac('sha256', secret).update(body).digest();
  return timingSafeEqual(expected, Buffer.from(header, 'hex'));
}
