/**
 * Licensing end to end, on loopback only (no root, no traffic beyond 127.0.0.1): two NetClamp services
 * ("machines" A and B: `serve()` with a fake engine, started with the NETCLAMP_TEST_* environment the CLI
 * reads, so each has the test vendor key and its own HWID), the reference license server holding the
 * matching private key, and the payment stand-in that sends the provider's signed webhooks.
 *
 * The steps build on each other, in order: buy on A, move the credit to B, then try every bad token on B.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { serve, type RunningServer } from '../../lib/server.js';
import { TOKEN_FILE } from '../../lib/services/auth-token.js';
import { TEST_HWID_SEED_ENV, TEST_VENDOR_KEY_ENV } from '../../lib/license/settings.js';
import { encodeToken, rawPublicKey, signToken, type TokenPayload } from '../../lib/license/token.js';
import { startLicenseServer, type RunningLicenseServer } from '../../lib/license-server/app.js';
import { PaymentStandIn } from '../helpers/payment-stand-in.js';
import { openFakeEngine } from '../helpers/fake-engine.js';

const PACKS = [
  { variant_id: '101', name: '5 clamp slots', units: 5, price: '9.00', currency: 'EUR' },
  { variant_id: '102', name: '25 clamp slots', units: 25, price: '29.00', currency: 'EUR' },
];

interface Reply {
  status: number;
  body: any;
  headers: Headers;
}

/** One NetClamp service and a client of its API. */
class Machine {
  private constructor(readonly server: RunningServer, private readonly token: string, readonly dataDir: string) {}

  /** Starts a service the way the CLI does, with the test settings in its environment. */
  static async start(dataDir: string, licenseServerUrl: string, vendorKey: string, seed: string): Promise<Machine> {
    fs.writeFileSync(path.join(dataDir, 'config.toml'), `[license]\nserver_url = "${licenseServerUrl}"\n`);
    const saved = { key: process.env[TEST_VENDOR_KEY_ENV], seed: process.env[TEST_HWID_SEED_ENV] };
    process.env[TEST_VENDOR_KEY_ENV] = vendorKey;
    process.env[TEST_HWID_SEED_ENV] = seed;
    try {
      const server = await serve({ dataDir, listen: '127.0.0.1:0', engineFactory: openFakeEngine });
      return new Machine(server, fs.readFileSync(path.join(dataDir, TOKEN_FILE), 'utf8').trim(), dataDir);
    } finally {
      for (const [name, value] of [[TEST_VENDOR_KEY_ENV, saved.key], [TEST_HWID_SEED_ENV, saved.seed]] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  }

  async call(method: string, url: string, body?: unknown): Promise<Reply> {
    const response = await fetch(`${this.server.url}/api/v1${url}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text === '' ? undefined : JSON.parse(text), headers: response.headers };
  }

  async expect(status: number, method: string, url: string, body?: unknown): Promise<any> {
    const reply = await this.call(method, url, body);
    assert.equal(reply.status, status, `${method} ${url}: ${JSON.stringify(reply.body)}`);
    return reply.body;
  }

  license(): Promise<any> {
    return this.expect(200, 'GET', '/license');
  }

  limitRule(name: string): Promise<Reply> {
    return this.call('POST', '/rules', { name, app_path: '', action: 'LIMIT', rate_limit_down_bytes_per_sec: 100_000 });
  }
}

function payloadOf(token: string): TokenPayload {
  return JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString('utf8')) as TokenPayload;
}

describe('licensing end to end: checkout, webhook, transfer, rebind, refusals', () => {
  let root: string;
  let vendorKey: KeyObject;
  let standIn: PaymentStandIn;
  let licenseServer: RunningLicenseServer;
  let a: Machine;
  let b: Machine;
  // Carried from step to step.
  let nonce: string;
  let boundOnA: string;
  let unbound: string;

  before(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'netclamp-licensing-e2e-'));
    vendorKey = generateKeyPairSync('ed25519').privateKey;
    standIn = await PaymentStandIn.start({ variants: PACKS.map((pack) => pack.variant_id) });
    licenseServer = await startLicenseServer({
      privateKey: vendorKey,
      webhookSecret: standIn.webhookSecret,
      provider: { url: standIn.url, apiKey: standIn.apiKey, storeId: standIn.storeId, timeoutMs: 5_000 },
      packs: PACKS,
      dbPath: path.join(root, 'license-server.db'),
    });
    standIn.webhookUrl = `${licenseServer.url}/v1/webhooks/payment`;
    for (const name of ['a', 'b']) fs.mkdirSync(path.join(root, name), { mode: 0o700 });
    a = await Machine.start(path.join(root, 'a'), licenseServer.url, rawPublicKey(vendorKey), 'machine A');
    b = await Machine.start(path.join(root, 'b'), licenseServer.url, rawPublicKey(vendorKey), 'machine B');
  });

  after(async () => {
    await a?.server.close();
    await b?.server.close();
    await licenseServer?.close();
    await standIn?.close();
    fs.rmSync(root, { recursive: true, force: true });
  });

  test('the two services run with test settings and different HWIDs; without credits the 4th LIMIT rule is a 402', async () => {
    const [stateA, stateB] = [await a.license(), await b.license()];
    assert.equal(stateA.test_settings, true);
    assert.match(fs.readFileSync(path.join(a.dataDir, 'service.log'), 'utf8'), /LICENSING TEST SETTINGS IN EFFECT/, 'the service warns in its log');
    assert.notEqual(stateA.hwid, stateB.hwid);
    for (let i = 1; i <= 3; i++) assert.equal((await a.limitRule(`limit ${i}`)).status, 201);
    const refused = await a.limitRule('limit 4');
    assert.equal(refused.status, 402, JSON.stringify(refused.body));
    assert.match(refused.body.detail, /3 of 3 are in use/);
  });

  test('packs come from the license server', async () => {
    assert.deepEqual(await a.expect(200, 'GET', '/billing/packs'), { packs: PACKS });
  });

  test('checkout gives the payment page; check is 202 until paid; forged and unsigned webhooks mint nothing', async () => {
    const checkout = await a.expect(201, 'POST', '/billing/checkout', { variant_id: '101' });
    nonce = checkout.nonce;
    assert.equal(checkout.checkout_url, standIn.checkoutFor(nonce).url);
    assert.deepEqual(await a.expect(202, 'GET', `/billing/check/${nonce}`), { status: 'pending' });

    assert.equal((await standIn.payForged(nonce)).status, 401);
    assert.equal((await standIn.payUnsigned(nonce)).status, 401);
    assert.deepEqual(await a.expect(202, 'GET', `/billing/check/${nonce}`), { status: 'pending' }, 'a forged webhook minted nothing');
    assert.equal((await a.license()).cap, 3);
  });

  test('the signed webhook mints the credit: check answers the bound token, the credit is active, the cap raised', async () => {
    assert.equal((await standIn.pay(nonce)).status, 200);
    const minted = await a.expect(200, 'GET', `/billing/check/${nonce}`);
    boundOnA = minted.token;
    const state = await a.license();
    assert.equal(payloadOf(boundOnA).hwid, state.hwid);
    assert.equal(payloadOf(boundOnA).binding, 1);
    assert.equal(state.cap, 8);
    assert.deepEqual(state.credits.map((credit: { units: number; state: string }) => [credit.units, credit.state]), [[5, 'active']]);
    assert.equal((await a.limitRule('limit 4')).status, 201, 'the 4th LIMIT rule fits now');
  });

  test('transfer on A: refused while A would be over its cap, then the server unbinds and the credit leaves A', async () => {
    const creditId = payloadOf(boundOnA).credit_id;
    const over = await a.call('POST', `/license/transfer/${creditId}`);
    assert.equal(over.status, 409, JSON.stringify(over.body));
    const rules = await a.expect(200, 'GET', '/rules');
    await a.expect(204, 'DELETE', `/rules/${rules.find((rule: { name: string }) => rule.name === 'limit 4').id}`);

    const transfer = await a.expect(200, 'POST', `/license/transfer/${creditId}`);
    unbound = transfer.token;
    assert.equal(payloadOf(unbound).hwid, null);
    assert.equal(payloadOf(unbound).credit_id, creditId);
    const state = await a.license();
    assert.equal(state.cap, 3);
    assert.deepEqual(state.credits, []);
  });

  test('rebind on B moves the credit there; the same token is refused on A; A cannot re-activate its old bound token', async () => {
    const rebound = await b.expect(200, 'POST', '/license/rebind', { token: unbound });
    assert.equal(rebound.cap, 8);
    assert.equal(rebound.credit.binding, 2);
    const stateB = await b.license();
    assert.equal(stateB.credits[0].state, 'active');
    const repeat = await b.expect(200, 'POST', '/license/rebind', { token: unbound });
    assert.equal(repeat.changed, false, 'B already holds the credit: its own repeat is an idempotent no-op');

    const again = await a.call('POST', '/license/rebind', { token: unbound });
    assert.equal(again.status, 409, JSON.stringify(again.body));
    assert.match(again.body.detail, /already bound/);
    const stale = await a.call('POST', '/license/activate', { token: boundOnA });
    assert.equal(stale.status, 400);
    assert.match(stale.body.detail, /^token: stale binding/);
    assert.equal((await a.license()).cap, 3);
    assert.equal((await b.license()).cap, 8);
  });

  test('every bad token kind is a 400 naming the reason on B, and B\'s license state is unchanged', async () => {
    const before = await b.license();
    const now = Math.floor(Date.now() / 1000);
    const valid: TokenPayload = {
      v: 1, credit_id: '3f1c9a52-7c1e-4f7e-9a51-1c2b3d4e5f60', units: 5, hwid: before.hwid, binding: 1, variant_id: '101', iat: now,
    };
    const good = signToken(valid, vendorKey);
    const [payloadPart, signaturePart] = good.split('.') as [string, string];
    const cases: Array<[string, string, RegExp]> = [
      ['malformed', 'not-a-token', /^token: malformed/],
      ['bad base64', `${payloadPart}*.${signaturePart}`, /^token: malformed/],
      ['tampered', `${Buffer.from(JSON.stringify({ ...valid, units: 999 })).toString('base64url')}.${signaturePart}`, /^token: bad signature/],
      ['another key', signToken(valid, generateKeyPairSync('ed25519').privateKey), /^token: bad signature/],
      ['bad signature bytes', encodeToken(valid, Buffer.alloc(64)), /^token: bad signature/],
      ['expired', signToken({ ...valid, exp: now - 1 }, vendorKey), /^token: expired/],
      ['other HWID (A\'s token)', boundOnA, /^token: bound to another machine/],
      ['unbound', unbound, /^token: unbound/],
      ['stale binding of the credit B holds', signToken({ ...payloadOf(unbound), hwid: before.hwid, binding: 1 }, vendorKey), /^token: stale binding/],
    ];
    for (const [name, token, detail] of cases) {
      const reply = await b.call('POST', '/license/activate', { token });
      assert.equal(reply.status, 400, `${name}: ${JSON.stringify(reply.body)}`);
      assert.match(reply.body.detail, detail, name);
    }
    assert.deepEqual(await b.license(), before, 'nothing changed on B');
  });
});
