import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { assertProblem, startTestApp, type TestApp } from '../helpers/app.js';
import {
  payloadOf, problem, sign, startFakeLicenseServer, testVendor, type FakeLicenseServer, type TestVendor,
} from '../helpers/license-fixture.js';
import { encodeToken } from '../../lib/license/token.js';
import type { BusEvent } from '../../lib/services/event-bus.js';
import type { LicenseSettings } from '../../lib/license/settings.js';

interface Licensed {
  app: TestApp;
  vendor: TestVendor;
  hwid: string;
  /** A valid token bound to this app's HWID. */
  bound(overrides?: Record<string, unknown>): string;
  state(): Promise<Record<string, any>>;
  events: BusEvent[];
}

async function licensedApp(t: TestContext, options: { vendor?: TestVendor; seed?: string; settings?: LicenseSettings } = {}): Promise<Licensed> {
  const vendor = options.vendor ?? testVendor();
  const app = await startTestApp(t, {
    appOptions: { license: { testVendorKey: vendor.publicKey, testHwidSeed: options.seed ?? 'machine-a', ...options.settings } },
  });
  const hwid = (await app.request({ method: 'GET', url: '/api/v1/license/hwid' })).json().hwid as string;
  const events: BusEvent[] = [];
  app.app.netclamp.events.subscribe((event) => events.push(event));
  return {
    app, vendor, hwid, events,
    bound: (overrides = {}) => vendor.token({ hwid, ...overrides }),
    state: async () => (await app.request({ method: 'GET', url: '/api/v1/license' })).json(),
  };
}

async function useServer(app: TestApp, url: string): Promise<void> {
  const response = await app.request({ method: 'PUT', url: '/api/v1/config', payload: { license: { server_url: url } } });
  assert.equal(response.statusCode, 200, response.body);
}

function limitRule(name: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { name, app_path: '', action: 'LIMIT', rate_limit_down_bytes_per_sec: 1000, ...overrides };
}

function activate(licensed: Licensed, token: string) {
  return licensed.app.request({ method: 'POST', url: '/api/v1/license/activate', payload: { token } });
}

/** A fake license server that unbinds and binds like the real one, signing with `vendor`. */
function serveBindings(fake: FakeLicenseServer, vendor: TestVendor): void {
  fake.fallback = (call) => {
    const unbind = /^\/v1\/credits\/([^/]+)\/unbind$/.exec(call.path);
    if (call.method === 'POST' && unbind !== null) {
      const held = payloadOf((call.body as { token: string }).token);
      return { status: 200, body: { token: sign(vendor, { ...held, hwid: null }) } };
    }
    if (call.method === 'POST' && call.path === '/v1/credits/bind') {
      const { token, hwid } = call.body as { token: string; hwid: string };
      const held = payloadOf(token);
      return { status: 200, body: { token: sign(vendor, { ...held, hwid, binding: held.binding + 1 }) } };
    }
    return problem(404, 'no such route');
  };
}

// ---- state and HWID ------------------------------------------------------------------------------

test('GET /license: cap = baseline 3, nothing used, no credits; the HWID is 64 hex, stable, and seeded apart', async (t) => {
  const a = await licensedApp(t, { seed: 'one' });
  const state = await a.state();
  assert.deepEqual(state, { cap: 3, used: 0, baseline: 3, hwid: a.hwid, credits: [], transferred: [], test_settings: true });
  assert.match(a.hwid, /^[0-9a-f]{64}$/);
  const info = (await a.app.request({ method: 'GET', url: '/api/v1/license/hwid' })).json();
  assert.equal(info.hwid, a.hwid);
  assert.ok(Array.isArray(info.inputs));

  const sameSeed = await licensedApp(t, { seed: 'one' });
  const otherSeed = await licensedApp(t, { seed: 'two' });
  assert.equal(sameSeed.hwid, a.hwid, 'same machine, same seed: same HWID');
  assert.notEqual(otherSeed.hwid, a.hwid, 'another seed: another HWID');
});

test('without test settings the built-in vendor key is used: a test-signed token is a bad signature', async (t) => {
  const vendor = testVendor();
  const app = await startTestApp(t);
  const state = (await app.request({ method: 'GET', url: '/api/v1/license' })).json();
  assert.equal(state.test_settings, false);
  const token = vendor.token({ hwid: state.hwid });
  const refused = assertProblem(await app.request({ method: 'POST', url: '/api/v1/license/activate', payload: { token } }), 400);
  assert.match(String(refused.detail), /^token: bad signature/);
});

// ---- activation ----------------------------------------------------------------------------------

test('activate: a bound token raises the cap by its units, once; a second activation changes nothing', async (t) => {
  const licensed = await licensedApp(t);
  const token = licensed.bound({ units: 5 });
  const first = await activate(licensed, token);
  assert.equal(first.statusCode, 200, first.body);
  const body = first.json();
  assert.equal(body.changed, true);
  assert.equal(body.cap, 8);
  assert.equal(body.credit.credit_id, payloadOf(token).credit_id);
  assert.equal(body.credit.state, 'active');
  assert.equal(body.credit.units, 5);

  const again = await activate(licensed, token);
  assert.equal(again.statusCode, 200);
  assert.equal(again.json().changed, false);
  assert.equal(again.json().cap, 8);

  const state = await licensed.state();
  assert.equal(state.cap, 8);
  assert.equal(state.credits.length, 1);
  const changes = licensed.events.filter((event) => event.name === 'license_changed');
  assert.equal(changes.length, 1, 'one license_changed for one change');
  assert.deepEqual(changes[0]!.data, { used: 0, cap: 8, reason: 'activated', credit_id: body.credit.credit_id });
});

test('activate: every bad token kind is a 400 naming the reason, and the license state is unchanged', async (t) => {
  const licensed = await licensedApp(t);
  const good = licensed.bound({ units: 2 });
  assert.equal((await activate(licensed, good)).statusCode, 200);
  const stranger = testVendor();
  const [payloadPart, signaturePart] = good.split('.') as [string, string];
  const tampered = `${Buffer.from(JSON.stringify({ ...payloadOf(good), units: 1000 })).toString('base64url')}.${signaturePart}`;
  const now = Math.floor(Date.now() / 1000);
  const before = await licensed.state();
  const eventsBefore = licensed.events.length;

  const cases: Array<[string, string, RegExp]> = [
    ['one part', 'abc', /^token: malformed: .*two base64url parts/],
    ['three parts', `${good}.x`, /^token: malformed/],
    ['bad base64', `${payloadPart}!.${signaturePart}`, /^token: malformed: .*base64url/],
    ['not JSON', `${Buffer.from('{nope').toString('base64url')}.${signaturePart}`, /^token: malformed: .*not JSON/],
    ['missing field', licensed.vendor.token({ hwid: licensed.hwid, units: undefined }), /^token: malformed: .*units/],
    ['field of the wrong type', licensed.vendor.token({ hwid: licensed.hwid, units: 'many' }), /^token: malformed: .*units/],
    ['unknown version', licensed.vendor.token({ hwid: licensed.hwid, v: 2 }), /^token: malformed: .*version/],
    ['tampered payload', tampered, /^token: bad signature/],
    ['signed by another key', stranger.token({ hwid: licensed.hwid }), /^token: bad signature/],
    ['short signature', encodeToken(payloadOf(good), Buffer.alloc(10)), /^token: bad signature/],
    ['another machine', licensed.vendor.token({ hwid: 'ab'.repeat(32) }), /^token: bound to another machine/],
    ['unbound', licensed.vendor.token({ hwid: null }), /^token: unbound .*rebind/],
    ['expired', licensed.bound({ exp: now - 60 }), /^token: expired/],
    ['stale binding', licensed.vendor.token({ ...payloadOf(good), binding: 0 }), /^token: stale binding/],
  ];
  for (const [name, token, detail] of cases) {
    const refused = assertProblem(await activate(licensed, token), 400);
    assert.match(String(refused.detail), detail, name);
    assert.deepEqual(refused.errors, [{ field: 'token', message: String(refused.detail).replace(/^token: /, '') }], name);
  }
  for (const [payload, field] of [[{}, 'token'], [{ token: '' }, 'token'], [{ token: good, extra: 1 }, 'extra']] as const) {
    const refused = assertProblem(await licensed.app.request({ method: 'POST', url: '/api/v1/license/activate', payload }), 400);
    assert.match(String(refused.detail), new RegExp(`^${field}: `));
  }
  assert.deepEqual(await licensed.state(), before, 'nothing changed');
  assert.equal(licensed.events.length, eventsBefore, 'no event');
});

test('a credit survives a restart and counts again only if its token still verifies with the key in use', async (t) => {
  const vendor = testVendor();
  const first = await licensedApp(t, { vendor, seed: 'm' });
  assert.equal((await activate(first, first.bound({ units: 4 }))).statusCode, 200);
  const dataDir = first.app.dataDir;
  await first.app.close();

  const again = await startTestApp(t, { dataDir, appOptions: { license: { testVendorKey: vendor.publicKey, testHwidSeed: 'm' } } });
  const state = (await again.request({ method: 'GET', url: '/api/v1/license' })).json();
  assert.equal(state.cap, 7);
  assert.equal(state.credits[0].state, 'active');
  await again.close();

  const otherKey = await startTestApp(t, { dataDir, appOptions: { license: { testVendorKey: testVendor().publicKey, testHwidSeed: 'm' } } });
  const foreign = (await otherKey.request({ method: 'GET', url: '/api/v1/license' })).json();
  assert.equal(foreign.cap, 3);
  assert.equal(foreign.credits[0].state, 'bad_signature');
  await otherKey.close();

  const otherMachine = await startTestApp(t, { dataDir, appOptions: { license: { testVendorKey: vendor.publicKey, testHwidSeed: 'elsewhere' } } });
  const moved = (await otherMachine.request({ method: 'GET', url: '/api/v1/license' })).json();
  assert.equal(moved.cap, 3, 'a data dir copied to another machine brings no slots');
  assert.equal(moved.credits[0].state, 'other_hwid');
});

test('a credit whose token expires stops counting by itself', async (t) => {
  let nowMs = Date.now();
  const licensed = await licensedApp(t, { settings: { now: () => nowMs } });
  const exp = Math.floor(nowMs / 1000) + 3600;
  assert.equal((await activate(licensed, licensed.bound({ units: 2, exp }))).statusCode, 200);
  assert.equal((await licensed.state()).cap, 5);
  nowMs += 2 * 3600 * 1000;
  const state = await licensed.state();
  assert.equal(state.cap, 3);
  assert.equal(state.credits[0].state, 'expired');
  assert.equal(state.credits[0].expires_at, new Date(exp * 1000).toISOString());
});

// ---- the clamp-slot cap --------------------------------------------------------------------------

test('402 on the 4th LIMIT rule; BLOCK, ALLOW and disabled rules are free; accepted after activation', async (t) => {
  const licensed = await licensedApp(t);
  const { app } = licensed;
  for (let i = 1; i <= 3; i++) {
    assert.equal((await app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule(`limit ${i}`) })).statusCode, 201);
  }
  const refused = assertProblem(await app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule('limit 4') }), 402);
  assert.match(String(refused.detail), /3 of 3 are in use/);
  for (const action of ['BLOCK', 'ALLOW']) {
    assert.equal((await app.request({ method: 'POST', url: '/api/v1/rules', payload: { name: action, app_path: '', action } })).statusCode, 201);
  }
  const disabled = await app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule('off', { enabled: false }) });
  assert.equal(disabled.statusCode, 201);
  const rulesBefore = (await app.request({ method: 'GET', url: '/api/v1/rules' })).json();
  assert.equal(rulesBefore.length, 6, 'the refused rule was not stored');
  assert.equal((await licensed.state()).used, 3);

  // Enabling (PUT) and turning a BLOCK rule into a LIMIT rule take a slot too.
  const offRule = disabled.json();
  assertProblem(await app.request({ method: 'PUT', url: `/api/v1/rules/${offRule.id}`, payload: limitRule('off') }), 402);
  const block = rulesBefore.find((rule: { action: string }) => rule.action === 'BLOCK');
  assertProblem(await app.request({ method: 'PUT', url: `/api/v1/rules/${block.id}`, payload: limitRule('was block') }), 402);
  // A PUT that keeps the slot count (a LIMIT rule changing its rate) is fine at the cap.
  const limit1 = rulesBefore.find((rule: { name: string }) => rule.name === 'limit 1');
  assert.equal((await app.request({ method: 'PUT', url: `/api/v1/rules/${limit1.id}`, payload: limitRule('limit 1', { rate_limit_down_bytes_per_sec: 5 }) })).statusCode, 200);
  // Quotas count against the same cap.
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/quotas', payload: { name: 'q', app_path: '/usr/bin/true', limit_bytes: 1000 } }), 402);
  const offQuota = await app.request({ method: 'POST', url: '/api/v1/quotas', payload: { name: 'q', app_path: '/usr/bin/true', limit_bytes: 1000, enabled: false } });
  assert.equal(offQuota.statusCode, 201);

  assert.equal((await activate(licensed, licensed.bound({ units: 2 }))).statusCode, 200);
  assert.equal((await app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule('limit 4') })).statusCode, 201);
  assert.equal((await app.request({ method: 'PUT', url: `/api/v1/quotas/${offQuota.json().id}`, payload: { name: 'q', app_path: '/usr/bin/true', limit_bytes: 1000 } })).statusCode, 200);
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule('limit 6') }), 402);
  const state = await licensed.state();
  assert.equal(state.used, 5);
  assert.equal(state.cap, 5);
});

test('group install: a bundle that does not fit is refused whole; one that fits by replacing its own slots is fine', async (t) => {
  const licensed = await licensedApp(t);
  const { app } = licensed;
  assert.equal((await app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule('mine') })).statusCode, 201);
  const bundle = (rules: number, quotas: number, version = '1') => ({
    id: 'clamps', name: 'Clamps', version,
    rules: [
      { name: 'blocked', app_path: '', action: 'BLOCK' },
      ...Array.from({ length: rules }, (_, i) => limitRule(`group limit ${i}`)),
    ],
    quotas: Array.from({ length: quotas }, (_, i) => ({ name: `group quota ${i}`, app_path: '/usr/bin/true', limit_bytes: 1000 })),
  });
  const tooBig = assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle(2, 1) }), 402);
  assert.match(String(tooBig.detail), /bundle clamps needs 3 more clamp slots: 1 of 3/);
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/groups' })).json().groups, []);
  assert.equal((await app.request({ method: 'GET', url: '/api/v1/rules' })).json().length, 1, 'no rule of the bundle stayed');
  assert.equal((await app.request({ method: 'GET', url: '/api/v1/quotas' })).json().length, 0, 'no quota of the bundle stayed');

  assert.equal((await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle(1, 1) })).statusCode, 201);
  assert.equal((await licensed.state()).used, 3);
  // A new version with the same number of slots, moved from a quota to a rule, replaces the old one.
  const replaced = await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle(2, 0, '2') });
  assert.equal(replaced.statusCode, 200, replaced.body);
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle(3, 0, '3') }), 402);
  assert.equal((await app.request({ method: 'GET', url: '/api/v1/groups/clamps' })).json().version, '2');
  assert.equal((await licensed.state()).used, 3);
});

test('a subscription poll whose bundle no longer fits keeps the last good bundle and sends group_error', async (t) => {
  const licensed = await licensedApp(t);
  const { app } = licensed;
  let limits = 1;
  const server = http.createServer((_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({
      id: 'feed', name: 'Feed', version: String(limits), quotas: [],
      rules: Array.from({ length: limits }, (_, i) => limitRule(`feed ${i}`)),
    }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/feed.json`;
  assert.equal((await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url, interval_sec: 3600 } })).statusCode, 201);
  assert.equal((await app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule('mine 1') })).statusCode, 201);
  assert.equal((await app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule('mine 2') })).statusCode, 201);

  limits = 2;
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/feed/refresh' }), 402);
  const group = (await app.request({ method: 'GET', url: '/api/v1/groups/feed' })).json();
  assert.equal(group.version, '1', 'the last good bundle stays');
  assert.equal(group.rule_ids.length, 1);
  const error = licensed.events.find((event) => event.name === 'group_error');
  assert.ok(error !== undefined, 'group_error sent');
  assert.match(String((error.data as { detail: string }).detail), /clamp slot/);
});

// ---- transfer and rebind -------------------------------------------------------------------------

test('transfer: the server unbinds, the credit leaves the cap and is listed with its unbound token; asking again answers the same token; its old bound token is refused', async (t) => {
  const licensed = await licensedApp(t);
  const fake = await startFakeLicenseServer(t);
  serveBindings(fake, licensed.vendor);
  await useServer(licensed.app, fake.url);
  const bound = licensed.bound({ units: 2 });
  const creditId = payloadOf(bound).credit_id;
  assert.equal((await activate(licensed, bound)).statusCode, 200);

  const response = await licensed.app.request({ method: 'POST', url: `/api/v1/license/transfer/${creditId}` });
  assert.equal(response.statusCode, 200, response.body);
  const transfer = response.json();
  assert.equal(transfer.credit_id, creditId);
  assert.equal(transfer.cap, 3);
  const unbound = payloadOf(transfer.token);
  assert.equal(unbound.hwid, null);
  assert.equal(unbound.binding, 1);
  assert.deepEqual(fake.calls.map((call) => `${call.method} ${call.path}`), [`POST /v1/credits/${creditId}/unbind`]);
  assert.deepEqual(fake.calls[0]!.body, { token: bound, hwid: licensed.hwid });

  const state = await licensed.state();
  assert.equal(state.cap, 3);
  assert.deepEqual(state.credits, []);
  assert.equal(state.transferred.length, 1);
  assert.equal(state.transferred[0].token, transfer.token);
  assert.deepEqual(licensed.events.at(-1)!.data, { used: 0, cap: 3, reason: 'transferred', credit_id: creditId });

  const again = await licensed.app.request({ method: 'POST', url: `/api/v1/license/transfer/${creditId}` });
  assert.equal(again.statusCode, 200);
  assert.equal(again.json().token, transfer.token);
  assert.equal(fake.calls.length, 1, 'answered from the record, the server was not asked again');

  const stale = assertProblem(await activate(licensed, bound), 400);
  assert.match(String(stale.detail), /^token: stale binding/);
  assertProblem(await licensed.app.request({ method: 'POST', url: '/api/v1/license/transfer/00000000-0000-4000-8000-000000000000' }), 404);
  assertProblem(await licensed.app.request({ method: 'POST', url: '/api/v1/license/transfer/not-a-uuid' }), 400);
});

test('transfer refuses (409) while the cap without the credit would be below what is used, without asking the server', async (t) => {
  const licensed = await licensedApp(t);
  const fake = await startFakeLicenseServer(t);
  serveBindings(fake, licensed.vendor);
  await useServer(licensed.app, fake.url);
  const bound = licensed.bound({ units: 1 });
  assert.equal((await activate(licensed, bound)).statusCode, 200);
  for (let i = 0; i < 4; i++) {
    assert.equal((await licensed.app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule(`r${i}`) })).statusCode, 201);
  }
  const refused = assertProblem(await licensed.app.request({ method: 'POST', url: `/api/v1/license/transfer/${payloadOf(bound).credit_id}` }), 409);
  assert.match(String(refused.detail), /4 clamp slots are in use and the cap without credit .* would be 3: disable or delete 1/);
  assert.equal(fake.calls.length, 0);
  assert.equal((await licensed.state()).cap, 4);
});

test('while an unbind is in flight the credit no longer admits new slots; a refused unbind changes nothing', async (t) => {
  const licensed = await licensedApp(t);
  const fake = await startFakeLicenseServer(t);
  await useServer(licensed.app, fake.url);
  const bound = licensed.bound({ units: 1 });
  const creditId = payloadOf(bound).credit_id;
  assert.equal((await activate(licensed, bound)).statusCode, 200);
  for (let i = 0; i < 3; i++) {
    assert.equal((await licensed.app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule(`r${i}`) })).statusCode, 201);
  }
  let release!: () => void;
  const released = new Promise<void>((resolve) => { release = resolve; });
  let arrived!: () => void;
  const unbindArrived = new Promise<void>((resolve) => { arrived = resolve; });
  fake.fallback = async () => {
    arrived();
    await released;
    return problem(409, 'stale binding: the credit moved on');
  };
  const transfer = licensed.app.request({ method: 'POST', url: `/api/v1/license/transfer/${creditId}` });
  await unbindArrived;
  const held = assertProblem(await licensed.app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule('sneaky') }), 402);
  assert.match(String(held.detail), /being transferred/);
  assert.equal((await licensed.state()).cap, 4, 'the credit still counts until the server confirms');
  release();
  const refused = assertProblem(await transfer, 409);
  assert.match(String(refused.detail), /license server refused .*stale binding/);
  const state = await licensed.state();
  assert.equal(state.cap, 4);
  assert.equal(state.credits.length, 1);
  assert.deepEqual(state.transferred, []);
  assert.equal((await licensed.app.request({ method: 'POST', url: '/api/v1/rules', payload: limitRule('r3') })).statusCode, 201);
});

test('rebind: the server binds the unbound token to this HWID and the bound token is activated; a bound token is refused', async (t) => {
  const licensed = await licensedApp(t);
  const fake = await startFakeLicenseServer(t);
  serveBindings(fake, licensed.vendor);
  await useServer(licensed.app, fake.url);
  const unbound = licensed.vendor.token({ hwid: null, binding: 3, units: 2 });
  const response = await licensed.app.request({ method: 'POST', url: '/api/v1/license/rebind', payload: { token: unbound } });
  assert.equal(response.statusCode, 200, response.body);
  assert.equal(response.json().credit.binding, 4);
  assert.equal(response.json().cap, 5);
  assert.deepEqual(fake.calls[0]!.body, { token: unbound, hwid: licensed.hwid });

  // The same token again: this machine already holds the credit bound; the server is not asked.
  const again = await licensed.app.request({ method: 'POST', url: '/api/v1/license/rebind', payload: { token: unbound } });
  assert.equal(again.statusCode, 200);
  assert.equal(again.json().changed, false);
  assert.equal(fake.calls.length, 1);

  const boundHere = assertProblem(await licensed.app.request({ method: 'POST', url: '/api/v1/license/rebind', payload: { token: licensed.bound() } }), 400);
  assert.match(String(boundHere.detail), /already bound to this machine/);
  fake.fallback = () => problem(409, 'credit already bound');
  const taken = assertProblem(await licensed.app.request({ method: 'POST', url: '/api/v1/license/rebind', payload: { token: licensed.vendor.token({ hwid: null }) } }), 409);
  assert.match(String(taken.detail), /credit already bound/);
  // A server that answers a token for another machine is misbehaving: 502, nothing activated.
  fake.fallback = (call) => ({ status: 200, body: { token: sign(licensed.vendor, { ...payloadOf((call.body as { token: string }).token), hwid: 'cd'.repeat(32), binding: 9 }) } });
  assertProblem(await licensed.app.request({ method: 'POST', url: '/api/v1/license/rebind', payload: { token: licensed.vendor.token({ hwid: null }) } }), 502);
  assert.equal((await licensed.state()).credits.length, 1);
});

test('upstream failures: no server configured 503, refused connection 502, 5xx 502, garbage 502, no answer 504 within the deadline', async (t) => {
  const licensed = await licensedApp(t, { settings: { upstreamTimeoutMs: 300 } });
  const bound = licensed.bound();
  const creditId = payloadOf(bound).credit_id;
  assert.equal((await activate(licensed, bound)).statusCode, 200);
  const transfer = () => licensed.app.request({ method: 'POST', url: `/api/v1/license/transfer/${creditId}` });

  const none = assertProblem(await transfer(), 503);
  assert.match(String(none.detail), /server_url/);

  const closed = http.createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  await useServer(licensed.app, `http://127.0.0.1:${port}`);
  assert.match(String(assertProblem(await transfer(), 502).detail), /unreachable/);

  const fake = await startFakeLicenseServer(t);
  await useServer(licensed.app, fake.url);
  fake.fallback = () => problem(500, 'database on fire');
  assert.match(String(assertProblem(await transfer(), 502).detail), /answered 500: database on fire/);
  fake.fallback = () => ({ status: 200, raw: '<html>' });
  assertProblem(await transfer(), 502);
  fake.fallback = () => ({ status: 200, body: { token: 'not a token' } });
  assert.match(String(assertProblem(await transfer(), 502).detail), /does not verify/);
  fake.fallback = () => 'hang';
  assert.match(String(assertProblem(await transfer(), 504).detail), /did not answer within 0.3 s/);

  const state = await licensed.state();
  assert.equal(state.cap, 4, 'the credit stayed through every failure');
  assert.deepEqual(state.transferred, []);
});
