import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { assertProblem, startTestApp, type TestApp } from '../helpers/app.js';
import { payloadOf, problem, startFakeLicenseServer, testVendor, type FakeLicenseServer, type TestVendor } from '../helpers/license-fixture.js';
import { CHECK_RATE, CHECKOUT_RATE } from '../../lib/routes/billing.js';

const PACKS = [
  { variant_id: 'pack-1', name: 'One slot', units: 1, price: '3.00', currency: 'EUR' },
  { variant_id: 'pack-10', name: 'Ten slots', units: 10, price: '20.00', currency: 'EUR' },
];

interface Billing {
  app: TestApp;
  fake: FakeLicenseServer;
  vendor: TestVendor;
  hwid: string;
  /** The injected clock (epoch ms), for the rate limits and the packs cache. */
  clock: { now: number };
}

async function billingApp(t: TestContext, options: { upstreamTimeoutMs?: number } = {}): Promise<Billing> {
  const vendor = testVendor();
  const clock = { now: Date.now() };
  const app = await startTestApp(t, {
    appOptions: {
      license: { testVendorKey: vendor.publicKey, testHwidSeed: 'billing', now: () => clock.now, upstreamTimeoutMs: options.upstreamTimeoutMs },
    },
  });
  const fake = await startFakeLicenseServer(t);
  const put = await app.request({ method: 'PUT', url: '/api/v1/config', payload: { license: { server_url: fake.url } } });
  assert.equal(put.statusCode, 200, put.body);
  fake.routes.set('GET /v1/packs', () => ({ status: 200, body: { packs: PACKS } }));
  fake.routes.set('POST /v1/checkouts', (call) => {
    const { variant_id: variantId, nonce } = call.body as { variant_id: string; nonce: string };
    if (!PACKS.some((pack) => pack.variant_id === variantId)) return problem(400, `unknown variant ${variantId}`);
    return { status: 201, body: { nonce, checkout_url: `https://pay.example.test/checkout/${nonce}` } };
  });
  const hwid = (await app.request({ method: 'GET', url: '/api/v1/license/hwid' })).json().hwid as string;
  return { app, fake, vendor, hwid, clock };
}

function checkout(billing: Billing, variantId = 'pack-1') {
  return billing.app.request({ method: 'POST', url: '/api/v1/billing/checkout', payload: { variant_id: variantId } });
}

test('packs: the server list, cached: a second call within the cache time does not reach the server', async (t) => {
  const billing = await billingApp(t);
  const first = await billing.app.request({ method: 'GET', url: '/api/v1/billing/packs' });
  assert.equal(first.statusCode, 200, first.body);
  assert.deepEqual(first.json(), { packs: PACKS });
  const second = await billing.app.request({ method: 'GET', url: '/api/v1/billing/packs' });
  assert.deepEqual(second.json(), { packs: PACKS });
  assert.equal(billing.fake.calls.length, 1);
  billing.clock.now += 6 * 60_000;
  await billing.app.request({ method: 'GET', url: '/api/v1/billing/packs' });
  assert.equal(billing.fake.calls.length, 2, 'fetched again after the cache time');
});

test('packs: a server answer that is not a pack list is a 502, a silent server a 504', async (t) => {
  const billing = await billingApp(t, { upstreamTimeoutMs: 300 });
  billing.fake.routes.set('GET /v1/packs', () => ({ status: 200, body: { packs: [{ variant_id: 1 }] } }));
  assertProblem(await billing.app.request({ method: 'GET', url: '/api/v1/billing/packs' }), 502);
  billing.fake.routes.set('GET /v1/packs', () => 'hang');
  assertProblem(await billing.app.request({ method: 'GET', url: '/api/v1/billing/packs' }), 504);
});

test('checkout: 201 with the payment URL and a nonce tied to this HWID; an unknown variant is a 400 naming variant_id', async (t) => {
  const billing = await billingApp(t);
  const response = await checkout(billing, 'pack-10');
  assert.equal(response.statusCode, 201, response.body);
  const { checkout_url: url, nonce } = response.json();
  assert.match(nonce, /^[A-Za-z0-9_-]{32}$/);
  assert.equal(url, `https://pay.example.test/checkout/${nonce}`);
  assert.equal(response.headers.location, `/api/v1/billing/check/${nonce}`);
  assert.deepEqual(billing.fake.calls[0]!.body, { variant_id: 'pack-10', hwid: billing.hwid, nonce });

  const unknown = assertProblem(await checkout(billing, 'pack-999'), 400);
  assert.match(String(unknown.detail), /^variant_id: .*unknown variant pack-999/);
  // The refused checkout was not kept: polling its nonce is a 404 without asking the server.
  const refusedNonce = (billing.fake.calls[1]!.body as { nonce: string }).nonce;
  const calls = billing.fake.calls.length;
  assertProblem(await billing.app.request({ method: 'GET', url: `/api/v1/billing/check/${refusedNonce}` }), 404);
  assert.equal(billing.fake.calls.length, calls);
  assertProblem(await billing.app.request({ method: 'POST', url: '/api/v1/billing/checkout', payload: {} }), 400);
});

test('check: 202 while pending, then 200 with the token, which is activated and raises the cap; asking again is answered here', async (t) => {
  const billing = await billingApp(t);
  const { nonce } = (await checkout(billing)).json();
  let minted: string | null = null;
  billing.fake.routes.set(`GET /v1/checkouts/${nonce}`, (call) => {
    assert.equal(call.query.get('hwid'), billing.hwid);
    return minted === null ? { status: 202, body: { status: 'pending' } } : { status: 200, body: { status: 'minted', token: minted } };
  });
  const pending = await billing.app.request({ method: 'GET', url: `/api/v1/billing/check/${nonce}` });
  assert.equal(pending.statusCode, 202, pending.body);
  assert.deepEqual(pending.json(), { status: 'pending' });

  minted = billing.vendor.token({ hwid: billing.hwid, units: 10, variant_id: 'pack-10' });
  const done = await billing.app.request({ method: 'GET', url: `/api/v1/billing/check/${nonce}` });
  assert.equal(done.statusCode, 200, done.body);
  const body = done.json();
  assert.equal(body.status, 'minted');
  assert.equal(body.token, minted);
  assert.equal(body.credit.credit_id, payloadOf(minted).credit_id);
  assert.equal(body.cap, 13);
  const license = (await billing.app.request({ method: 'GET', url: '/api/v1/license' })).json();
  assert.equal(license.cap, 13);

  const calls = billing.fake.calls.length;
  const again = await billing.app.request({ method: 'GET', url: `/api/v1/billing/check/${nonce}` });
  assert.equal(again.statusCode, 200);
  assert.equal(again.json().token, minted);
  assert.equal(billing.fake.calls.length, calls, 'a completed checkout is answered without the server');

  assertProblem(await billing.app.request({ method: 'GET', url: '/api/v1/billing/check/short' }), 400);
  assertProblem(await billing.app.request({ method: 'GET', url: `/api/v1/billing/check/${'x'.repeat(32)}` }), 404);
});

test('check: a minted token for another machine is the server misbehaving (502) and activates nothing', async (t) => {
  const billing = await billingApp(t);
  const { nonce } = (await checkout(billing)).json();
  billing.fake.routes.set(`GET /v1/checkouts/${nonce}`, () => ({
    status: 200, body: { status: 'minted', token: billing.vendor.token({ hwid: 'ef'.repeat(32) }) },
  }));
  assertProblem(await billing.app.request({ method: 'GET', url: `/api/v1/billing/check/${nonce}` }), 502);
  assert.equal((await billing.app.request({ method: 'GET', url: '/api/v1/license' })).json().cap, 3);
});

test('429 with Retry-After past the checkout budget; the budget comes back with time', async (t) => {
  const billing = await billingApp(t);
  for (let i = 0; i < CHECKOUT_RATE.burst; i++) assert.equal((await checkout(billing)).statusCode, 201);
  const calls = billing.fake.calls.length;
  const limited = await checkout(billing);
  const body = assertProblem(limited, 429);
  assert.equal(limited.headers['retry-after'], String(Math.ceil(1 / CHECKOUT_RATE.perSecond)));
  assert.match(String(body.detail), /too often/);
  assert.equal(billing.fake.calls.length, calls, 'a limited call does not reach the server');
  billing.clock.now += 1000 / CHECKOUT_RATE.perSecond;
  assert.equal((await checkout(billing)).statusCode, 201);
});

test('check polled once a second for two minutes is never limited; a tight loop is', async (t) => {
  const billing = await billingApp(t);
  const { nonce } = (await checkout(billing)).json();
  billing.fake.routes.set(`GET /v1/checkouts/${nonce}`, () => ({ status: 202, body: { status: 'pending' } }));
  for (let second = 0; second < 120; second++) {
    const poll = await billing.app.request({ method: 'GET', url: `/api/v1/billing/check/${nonce}` });
    assert.equal(poll.statusCode, 202, `poll at ${second} s: ${poll.body}`);
    billing.clock.now += 1000;
  }
  let limited = 0;
  for (let i = 0; i < CHECK_RATE.burst + 1; i++) {
    const poll = await billing.app.request({ method: 'GET', url: `/api/v1/billing/check/${nonce}` });
    if (poll.statusCode === 429) limited++;
  }
  assert.equal(limited, 1, 'the call after the burst is limited');
});
