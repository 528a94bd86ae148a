/**
 * License tokens, shared by the service (verifies) and the reference license server (signs):
 * `base64url(JSON payload) "." base64url(Ed25519 signature over the ASCII of the first part)`, no padding.
 * Keys: public keys travel as base64url of the raw 32 bytes, private keys as a base64url 32-byte seed or
 * a PKCS#8 PEM. Every refusal is a TokenError whose `reason` says which part is wrong.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import Type, { type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { fieldErrorsFromSchemaIssues, type SchemaValidationIssue } from '../http/problem.js';

export const TOKEN_VERSION = 1;
/** Far above a real token (~300 characters); bounds the work done on garbage. */
export const MAX_TOKEN_LENGTH = 4096;
const ED25519_SIGNATURE_BYTES = 64;
const ED25519_KEY_BYTES = 32;
// DER headers of an Ed25519 SubjectPublicKeyInfo and PKCS#8 PrivateKeyInfo (RFC 8410); the key bytes follow.
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export const HWID_PATTERN = '^[0-9a-f]{64}$';
export const UUID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

/** Version 1 payload. Unknown fields are refused: a new field means a new `v`. */
export const TokenPayloadSchema = Type.Object({
  v: Type.Literal(TOKEN_VERSION),
  credit_id: Type.String({ pattern: UUID_PATTERN }),
  units: Type.Integer({ minimum: 1, maximum: 1000 }),
  /** null = unbound (transferable). */
  hwid: Type.Union([Type.Null(), Type.String({ pattern: HWID_PATTERN })]),
  /** How many times the credit was bound to a machine; a bind issues binding + 1. */
  binding: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  variant_id: Type.String({ minLength: 1, maxLength: 128 }),
  iat: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
  exp: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER })),
}, { additionalProperties: false });
export type TokenPayload = Static<typeof TokenPayloadSchema>;

const payloadCheck = Compile(TokenPayloadSchema);

export type TokenErrorReason = 'format' | 'base64' | 'json' | 'version' | 'field' | 'signature' | 'expired';

export class TokenError extends Error {
  readonly reason: TokenErrorReason;
  /** The payload field at fault, for reason 'field'. */
  readonly field: string | undefined;
  constructor(reason: TokenErrorReason, message: string, field?: string) {
    super(message);
    this.name = 'TokenError';
    this.reason = reason;
    this.field = field;
  }
}

export interface ParsedToken {
  payload: TokenPayload;
  /** The first part, exactly as signed. */
  signedPart: string;
  signature: Buffer;
}

/** Strict base64url: alphabet, no padding, and canonical (unused trailing bits zero), so one value has one text. */
export function decodeBase64Url(text: string, what: string): Buffer {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new TokenError('base64', `${what} is not base64url (alphabet A-Z a-z 0-9 - _, no padding)`);
  }
  const bytes = Buffer.from(text, 'base64url');
  if (bytes.toString('base64url') !== text) throw new TokenError('base64', `${what} is not canonical base64url`);
  return bytes;
}

/** The decoded payload, typed, or a TokenError naming the bad field(s); an unknown `v` is refused first. */
export function validateTokenPayload(value: unknown): TokenPayload {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TokenError('json', 'token payload is not a JSON object');
  }
  const version = (value as Record<string, unknown>).v;
  if (version === undefined) throw new TokenError('field', 'token payload: v: is required', 'v');
  if (version !== TOKEN_VERSION) {
    throw new TokenError('version', `token payload: unsupported token version ${JSON.stringify(version)} (this NetClamp reads version ${TOKEN_VERSION})`, 'v');
  }
  if (!payloadCheck.Check(value)) {
    const errors = fieldErrorsFromSchemaIssues(payloadCheck.Errors(value) as unknown as SchemaValidationIssue[]);
    throw new TokenError('field', `token payload: ${errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`, errors[0]?.field);
  }
  return value as TokenPayload;
}

/** Splits and decodes a token and checks its payload; does NOT check the signature (see verifyToken). */
export function parseToken(token: string): ParsedToken {
  if (typeof token !== 'string' || token.length === 0) throw new TokenError('format', 'token is empty');
  if (token.length > MAX_TOKEN_LENGTH) throw new TokenError('format', `token is longer than ${MAX_TOKEN_LENGTH} characters`);
  const parts = token.split('.');
  if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
    throw new TokenError('format', 'token is not two base64url parts joined by one "." (payload.signature)');
  }
  const [signedPart, signaturePart] = parts as [string, string];
  const payloadBytes = decodeBase64Url(signedPart, 'token payload');
  const signature = decodeBase64Url(signaturePart, 'token signature');
  if (signature.length !== ED25519_SIGNATURE_BYTES) {
    throw new TokenError('signature', `token signature is ${signature.length} bytes, an Ed25519 signature is ${ED25519_SIGNATURE_BYTES}`);
  }
  let decoded: unknown;
  try {
    decoded = JSON.parse(payloadBytes.toString('utf8'));
  } catch {
    throw new TokenError('json', 'token payload is not JSON');
  }
  return { payload: validateTokenPayload(decoded), signedPart, signature };
}

export interface VerifyOptions {
  /** Unix seconds; defaults to the wall clock. */
  now?: number;
}

/** The payload of a well-formed token signed by `publicKey` and not expired, or a TokenError. */
export function verifyToken(token: string, publicKey: KeyObject, options: VerifyOptions = {}): TokenPayload {
  const parsed = parseToken(token);
  if (!verify(null, Buffer.from(parsed.signedPart, 'ascii'), publicKey, parsed.signature)) {
    throw new TokenError('signature', 'token signature does not verify with the vendor key');
  }
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (parsed.payload.exp !== undefined && parsed.payload.exp <= now) {
    throw new TokenError('expired', `token expired at ${new Date(parsed.payload.exp * 1000).toISOString()}`);
  }
  return parsed.payload;
}

/** Joins an already-encoded payload and a signature; tests use it to build tampered tokens. */
export function encodeToken(payload: unknown, signature: Uint8Array): string {
  return `${Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url')}.${Buffer.from(signature).toString('base64url')}`;
}

/**
 * Signs any JSON value as a token payload, valid or not: the license server goes through signToken;
 * tests use this to make correctly signed tokens with bad payloads.
 */
export function signAnyPayload(payload: unknown, privateKey: KeyObject): string {
  const signedPart = Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url');
  return `${signedPart}.${sign(null, Buffer.from(signedPart, 'ascii'), privateKey).toString('base64url')}`;
}

/** A token for a payload that passes validateTokenPayload (checked first, so the server never signs garbage). */
export function signToken(payload: TokenPayload, privateKey: KeyObject): string {
  validateTokenPayload(payload);
  return signAnyPayload(payload, privateKey);
}

function assertEd25519(key: KeyObject, what: string): KeyObject {
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${what} is a ${key.asymmetricKeyType ?? 'symmetric'} key, not Ed25519`);
  return key;
}

/** base64url of the raw 32 public-key bytes (the tail of the SPKI DER). Accepts a private key too. */
export function rawPublicKey(key: KeyObject): string {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  assertEd25519(publicKey, 'the key');
  return publicKey.export({ format: 'der', type: 'spki' }).subarray(-ED25519_KEY_BYTES).toString('base64url');
}

export function publicKeyFromRaw(raw: string): KeyObject {
  const bytes = decodeBase64Url(raw.trim(), 'public key');
  if (bytes.length !== ED25519_KEY_BYTES) throw new Error(`public key is ${bytes.length} bytes, an Ed25519 public key is ${ED25519_KEY_BYTES}`);
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, bytes]), format: 'der', type: 'spki' });
}

/** A private key from a base64url raw 32-byte seed or a PKCS#8 PEM (what NETCLAMP_LS_PRIVATE_KEY holds). */
export function privateKeyFromText(text: string): KeyObject {
  const trimmed = text.trim();
  if (trimmed.startsWith('-----BEGIN')) {
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: trimmed, format: 'pem' });
    } catch (error) {
      throw new Error(`private key PEM does not parse: ${(error as Error).message}`);
    }
    return assertEd25519(key, 'private key PEM');
  }
  let seed: Buffer;
  try {
    seed = decodeBase64Url(trimmed, 'private key seed');
  } catch (error) {
    throw new Error(`${(error as Error).message}; expected a base64url 32-byte Ed25519 seed or a PKCS#8 PEM`);
  }
  if (seed.length !== ED25519_KEY_BYTES) throw new Error(`private key seed is ${seed.length} bytes, an Ed25519 seed is ${ED25519_KEY_BYTES}`);
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
}

/** base64url of the raw 32-byte seed of an Ed25519 private key (the tail of the PKCS#8 DER). */
export function rawPrivateSeed(key: KeyObject): string {
  assertEd25519(key, 'the key');
  return key.export({ format: 'der', type: 'pkcs8' }).subarray(-ED25519_KEY_BYTES).toString('base64url');
}

/** A fresh vendor key pair in the text forms above. */
export function generateVendorKeys(): { privateSeed: string; publicKey: string } {
  const { privateKey } = generateKeyPairSync('ed25519');
  return { privateSeed: rawPrivateSeed(privateKey), publicKey: rawPublicKey(privateKey) };
}
