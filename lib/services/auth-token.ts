/**
 * The bearer token in `auth.token`: created on first start (32 random bytes, base64url), mode 0600,
 * written atomically. Comparison hashes both sides to equal-length digests, then compares in constant time,
 * so neither the content nor the length of the token leaks through timing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { writeFileAtomic } from './atomic-file.js';

export const TOKEN_FILE = 'auth.token';
const TOKEN_BYTES = 32;
/** base64url of 32 bytes is 43 characters; shorter content in the file is not a token we made. */
const MIN_TOKEN_LENGTH = 43;

export function generateToken(): string {
  return randomBytes(TOKEN_BYTES).toString('base64url');
}

/** Reads the token, creating the file when it is missing or does not hold a usable token. */
export function loadOrCreateToken(dataDir: string): string {
  const file = path.join(dataDir, TOKEN_FILE);
  try {
    const existing = fs.readFileSync(file, 'utf8').trim();
    if (existing.length >= MIN_TOKEN_LENGTH && /^[A-Za-z0-9_-]+$/.test(existing)) return existing;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const token = generateToken();
  writeFileAtomic(file, `${token}\n`, 0o600);
  return token;
}

/**
 * POST /auth/rotate: a new token, written atomically (0600) before the verifier switches, so a failed
 * write leaves the old token valid and a crash never leaves a file the service does not accept.
 */
export function rotateToken(dataDir: string, verifier: TokenVerifier): string {
  const token = generateToken();
  writeFileAtomic(path.join(dataDir, TOKEN_FILE), `${token}\n`, 0o600);
  verifier.replace(token);
  return token;
}

export class TokenVerifier {
  private digest: Buffer;
  constructor(token: string) {
    this.digest = sha256(token);
  }

  /** Token rotation: the old token fails from the next request on (requests are checked one by one). */
  replace(token: string): void {
    this.digest = sha256(token);
  }

  /** `authorization` is the raw header value. */
  verifyHeader(authorization: string | undefined): boolean {
    if (authorization === undefined) return false;
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (match === null) return false;
    return timingSafeEqual(sha256(match[1]!), this.digest);
  }
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}
