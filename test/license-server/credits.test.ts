/**
 * Moving a credit between machines on the license server: unbind gives an unbound token with the same
 * binding number; bind gives a bound one with binding + 1, once; stale tokens, other machines' tokens and
 * bad tokens are refused (409 / 403 / 400) and change nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { signAnyPayload, signToken, verifyToken } from '../../lib/license/token.js';
import { HWID_A, HWID_B, HWID_C, startHarness, type Harness } from './harness.js';

async function unbind(h: Harness, token: string, hwid: string, creditId = verifyToken(token, h.publicKey).credit_id) {
  return h.call('POST', `/v1/credits/${creditId}/unbind`, { token, hwid });
}

async function bind(h: Harness, token: string, hwid: string) {
  return h.call('POST', '/v1/credits/bind', { token, hwid });
}

function expectStatus(response: { status: number; body: any }, status: number, detail?: RegExp): void {
  assert.equal(response.status, status, JSON.stringify(response.body));
  if (detail !== undefined) assert.match(response.body.detail, detail);
}

test('unbind then bind moves a credit: binding numbers, hwids, retries and the bind-once rule', async (t) => {
  const h = await startHarness(t);
  const boundA = await h.buy(HWID_A);
  const minted = verifyToken(boundA, h.publicKey);

  // Someone else cannot unbind A's credit, even holding A's token.
  expectStatus(await unbind(h, boundA, HWID_B), 403);

  const unbound = await unbind(h, boundA, HWID_A);
  expectStatus(unbound, 200);
  const unboundToken = unbound.body.token as string;
  const unboundPayload = verifyToken(unboundToken, h.publicKey);
  assert.deepEqual(unboundPayload, { ...minted, hwid: null, iat: unboundPayload.iat });
  // A retry after a lost answer gets the same unbound token, not a refusal.
  assert.equal((await unbind(h, boundA, HWID_A)).body.token, unboundToken);

  const boundB = await bind(h, unboundToken, HWID_B);
  expectStatus(boundB, 200);
  const bPayload = verifyToken(boundB.body.token, h.publicKey);
  assert.equal(bPayload.hwid, HWID_B);
  assert.equal(bPayload.binding, 2);
  assert.equal(bPayload.credit_id, minted.credit_id);
  assert.equal(bPayload.units, minted.units);
  // B asking again (its answer was lost) gets the same token; a third machine is refused.
  assert.equal((await bind(h, unboundToken, HWID_B)).body.token, boundB.body.token);
  expectStatus(await bind(h, unboundToken, HWID_C), 409, /credit already bound/);

  // A's old bound token is stale now.
  expectStatus(await unbind(h, boundA, HWID_A), 409, /stale/);

  // B transfers it on; the old unbound token (binding 1) is used up, the new one (binding 2) binds once.
  const unboundAgain = await unbind(h, boundB.body.token, HWID_B);
  expectStatus(unboundAgain, 200);
  assert.equal(verifyToken(unboundAgain.body.token, h.publicKey).binding, 2);
  expectStatus(await bind(h, unboundToken, HWID_C), 409, /credit already bound/);
  const boundC = await bind(h, unboundAgain.body.token, HWID_C);
  expectStatus(boundC, 200);
  assert.equal(verifyToken(boundC.body.token, h.publicKey).binding, 3);

  // All of it is in SQLite: after a restart B's token is still stale and C's still current.
  await h.restart();
  expectStatus(await unbind(h, boundB.body.token, HWID_B), 409);
  expectStatus(await unbind(h, boundC.body.token, HWID_C), 200);
});

test('bad tokens are 400 naming the reason; nothing changes', async (t) => {
  const h = await startHarness(t);
  const boundA = await h.buy(HWID_A);
  const creditId = verifyToken(boundA, h.publicKey).credit_id;

  expectStatus(await unbind(h, 'garbage', HWID_A, creditId), 400, /token: token is not two base64url parts/);
  const [first, second] = boundA.split('.') as [string, string];
  const flipped = `${first}.${second.startsWith('A') ? 'B' : 'A'}${second.slice(1)}`;
  expectStatus(await unbind(h, flipped, HWID_A, creditId), 400, /signature/);

  const stranger = generateKeyPairSync('ed25519').privateKey;
  const foreign = signToken({ ...verifyToken(boundA, h.publicKey) }, stranger);
  expectStatus(await unbind(h, foreign, HWID_A, creditId), 400, /signature/);
  const missingField = signAnyPayload({ v: 1, credit_id: creditId, hwid: HWID_A, binding: 1, variant_id: '101', iat: 1 }, h.privateKey);
  expectStatus(await unbind(h, missingField, HWID_A, creditId), 400, /units: is required/);
  const expired = signToken({ ...verifyToken(boundA, h.publicKey), exp: 1_000 }, h.privateKey);
  expectStatus(await unbind(h, expired, HWID_A, creditId), 400, /expired/);

  // Right token, wrong credit in the path; a bound token offered to bind; an unbound token offered to unbind.
  expectStatus(await unbind(h, boundA, HWID_A, randomUUID()), 400, /another credit/);
  expectStatus(await bind(h, boundA, HWID_B), 400, /bound token/);
  const unbound = (await unbind(h, boundA, HWID_A)).body.token as string;
  expectStatus(await unbind(h, unbound, HWID_A, creditId), 400, /unbound token/);

  // Schema: hwid format, unknown field, credit id format.
  expectStatus(await bind(h, unbound, 'not-a-hwid'), 400, /hwid/);
  expectStatus(await h.call('POST', '/v1/credits/bind', { token: unbound, hwid: HWID_B, extra: true }), 400, /extra/);
  expectStatus(await h.call('POST', '/v1/credits/not-a-uuid/unbind', { token: boundA, hwid: HWID_A }), 400, /credit_id/);

  // None of the refusals moved the credit: the unbound token still binds, once.
  expectStatus(await bind(h, unbound, HWID_B), 200);
});

test('a token signed by the server key for a credit it does not know is 404', async (t) => {
  const h = await startHarness(t);
  const ghost = signToken({ v: 1, credit_id: randomUUID(), units: 5, hwid: null, binding: 1, variant_id: '101', iat: 1 }, h.privateKey);
  expectStatus(await bind(h, ghost, HWID_A), 404);
});

test('two binds of one unbound token racing: exactly one machine wins', async (t) => {
  const h = await startHarness(t);
  const boundA = await h.buy(HWID_A);
  const unbound = (await unbind(h, boundA, HWID_A)).body.token as string;
  const results = await Promise.all([bind(h, unbound, HWID_B), bind(h, unbound, HWID_C)]);
  assert.deepEqual(results.map((r) => r.status).sort(), [200, 409]);
});
