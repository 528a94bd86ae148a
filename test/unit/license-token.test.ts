/**
 * License tokens: a signed payload round-trips; every kind of damage is refused with the reason that
 * names the damaged part; keys convert between KeyObject and their text forms both ways.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID, sign } from 'node:crypto';
import {
  encodeToken, generateVendorKeys, parseToken, privateKeyFromText, publicKeyFromRaw, rawPrivateSeed, rawPublicKey,
  signAnyPayload, signToken, TokenError, verifyToken, type TokenErrorReason, type TokenPayload,
} from '../../lib/license/token.js';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');

function payload(overrides: Partial<Record<keyof TokenPayload, unknown>> = {}): TokenPayload {
  return {
    v: 1, credit_id: randomUUID(), units: 5, hwid: 'a'.repeat(64), binding: 1, variant_id: 'pack-5', iat: 1_700_000_000,
    ...overrides,
  } as TokenPayload;
}

function refused(action: () => unknown, reason: TokenErrorReason, message?: RegExp): void {
  assert.throws(action, (error: unknown) => {
    assert.ok(error instanceof TokenError, `expected a TokenError, got ${String(error)}`);
    assert.equal(error.reason, reason, error.message);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  });
}

test('a signed token verifies and gives back its payload; an unbound one too', () => {
  const bound = payload();
  assert.deepEqual(verifyToken(signToken(bound, privateKey), publicKey), bound);
  const unbound = payload({ hwid: null, binding: 3, exp: 4_000_000_000 });
  assert.deepEqual(verifyToken(signToken(unbound, privateKey), publicKey), unbound);
  const token = signToken(bound, privateKey);
  assert.match(token, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'two unpadded base64url parts');
  assert.deepEqual(JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString('utf8')), bound);
});

test('a tampered payload, a tampered signature and another key are refused as signature', () => {
  const token = signToken(payload({ units: 5 }), privateKey);
  const [, signature] = token.split('.') as [string, string];
  const raised = `${Buffer.from(JSON.stringify(payload({ units: 500 }))).toString('base64url')}.${signature}`;
  refused(() => verifyToken(raised, publicKey), 'signature', /does not verify/);

  const sigBytes = Buffer.from(signature, 'base64url');
  sigBytes[10] = sigBytes[10]! ^ 0x01;
  refused(() => verifyToken(`${token.split('.')[0]}.${sigBytes.toString('base64url')}`, publicKey), 'signature');

  refused(() => verifyToken(signToken(payload(), other.privateKey), publicKey), 'signature');
  refused(() => verifyToken(`${token.split('.')[0]}.${Buffer.alloc(10).toString('base64url')}`, publicKey), 'signature', /10 bytes/);
});

test('format and base64 damage is named', () => {
  refused(() => verifyToken('', publicKey), 'format');
  refused(() => verifyToken('justonepart', publicKey), 'format');
  refused(() => verifyToken('a.b.c', publicKey), 'format');
  refused(() => verifyToken('.abc', publicKey), 'format');
  refused(() => verifyToken('x'.repeat(5000), publicKey), 'format');
  const token = signToken(payload(), privateKey);
  const [first, second] = token.split('.') as [string, string];
  refused(() => verifyToken(`${first}=.${second}`, publicKey), 'base64', /payload/);
  refused(() => verifyToken(`${first}.${second.slice(0, -2)}+/`, publicKey), 'base64', /signature/);
  // A length no base64 text can have, and a non-canonical last character (same bytes, other text).
  refused(() => verifyToken(`AAAAA.${second}`, publicKey), 'base64', /payload/);
  const lastChar = second.at(-1)!;
  const sibling = lastChar === 'A' ? 'B' : lastChar === 'Q' ? 'R' : String.fromCharCode(lastChar.charCodeAt(0) + 1);
  refused(() => verifyToken(`${first}.${second.slice(0, -1)}${sibling}`, publicKey), 'base64', /canonical/);
});

test('a correctly signed payload that is not JSON, not an object, or of an unknown version is refused', () => {
  const signedPart = Buffer.from('{not json').toString('base64url');
  const notJson = `${signedPart}.${sign(null, Buffer.from(signedPart), privateKey).toString('base64url')}`;
  refused(() => verifyToken(notJson, publicKey), 'json');
  refused(() => verifyToken(signAnyPayload([1, 2], privateKey), publicKey), 'json');
  refused(() => verifyToken(signAnyPayload(payload({ v: 2 }), privateKey), publicKey), 'version', /version 2/);
  refused(() => verifyToken(signAnyPayload(payload({ v: '1' }), privateKey), publicKey), 'version');
});

test('a correctly signed payload with a missing, mistyped or unknown field is refused naming the field', () => {
  const { units: _units, ...noUnits } = payload();
  refused(() => verifyToken(signAnyPayload(noUnits, privateKey), publicKey), 'field', /units: is required/);
  const cases: Array<[Partial<Record<string, unknown>>, string]> = [
    [{ units: '5' }, 'units'],
    [{ units: 0 }, 'units'],
    [{ units: 1001 }, 'units'],
    [{ units: 2.5 }, 'units'],
    [{ hwid: 'A'.repeat(64) }, 'hwid'],
    [{ hwid: 'ab' }, 'hwid'],
    [{ credit_id: 'not-a-uuid' }, 'credit_id'],
    [{ binding: -1 }, 'binding'],
    [{ binding: '1' }, 'binding'],
    [{ variant_id: '' }, 'variant_id'],
    [{ variant_id: 7 }, 'variant_id'],
    [{ iat: 'now' }, 'iat'],
    [{ exp: 1.5 }, 'exp'],
    [{ extra: true }, 'extra'],
  ];
  for (const [override, field] of cases) {
    const token = signAnyPayload(payload(override), privateKey);
    assert.throws(() => verifyToken(token, publicKey), (error: unknown) => {
      assert.ok(error instanceof TokenError);
      assert.equal(error.reason, 'field', `${JSON.stringify(override)}: ${error.message}`);
      assert.equal(error.field, field, error.message);
      assert.match(error.message, new RegExp(`${field}: `));
      return true;
    });
  }
  // parseToken refuses the same without a key.
  refused(() => parseToken(signAnyPayload(payload({ units: '5' }), privateKey)), 'field');
});

test('signToken refuses to sign an invalid payload', () => {
  refused(() => signToken(payload({ units: 0 }), privateKey), 'field', /units/);
});

test('an expired token is refused; exp in the future is fine', () => {
  const token = signToken(payload({ exp: 1_700_000_100 }), privateKey);
  assert.equal(verifyToken(token, publicKey, { now: 1_700_000_099 }).exp, 1_700_000_100);
  refused(() => verifyToken(token, publicKey, { now: 1_700_000_100 }), 'expired');
});

test('keys round-trip through their text forms', () => {
  const raw = rawPublicKey(publicKey);
  assert.equal(Buffer.from(raw, 'base64url').length, 32);
  assert.equal(rawPublicKey(privateKey), raw, 'the public half of a private key');
  const again = publicKeyFromRaw(raw);
  const token = signToken(payload(), privateKey);
  assert.ok(verifyToken(token, again));

  const seed = rawPrivateSeed(privateKey);
  const fromSeed = privateKeyFromText(seed);
  assert.equal(rawPublicKey(fromSeed), raw);
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  assert.equal(rawPublicKey(privateKeyFromText(pem)), raw);

  const generated = generateVendorKeys();
  assert.equal(rawPublicKey(privateKeyFromText(generated.privateSeed)), generated.publicKey);

  assert.throws(() => publicKeyFromRaw(Buffer.alloc(31).toString('base64url')), /31 bytes/);
  assert.throws(() => privateKeyFromText('not a key!'), /base64url/);
  assert.throws(() => privateKeyFromText(Buffer.alloc(16).toString('base64url')), /16 bytes/);
  const rsaPem = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  assert.throws(() => privateKeyFromText(rsaPem), /not Ed25519/);
});

test('encodeToken joins any payload and signature (for building bad tokens)', () => {
  const body = payload();
  const token = encodeToken(body, Buffer.alloc(64));
  assert.deepEqual(parseToken(token).payload, body, 'well formed');
  refused(() => verifyToken(token, publicKey), 'signature');
});
