/**
 * The license server on loopback with a fresh key pair and a temp database, wired to a payment stand-in
 * (its webhooks go to this server). Everything is closed and removed after the test.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { startLicenseServer, type LicenseServerOptions, type RunningLicenseServer } from '../../lib/license-server/app.js';
import type { Pack } from '../../lib/license-server/schemas.js';
import { PaymentStandIn, request } from '../helpers/payment-stand-in.js';

export const PACKS: Pack[] = [
  { variant_id: '101', name: '5 clamp slots', units: 5, price: '9.00', currency: 'EUR' },
  { variant_id: '102', name: '25 clamp slots', units: 25, price: '29.00', currency: 'EUR' },
];

export const HWID_A = 'a'.repeat(64);
export const HWID_B = 'b'.repeat(64);
export const HWID_C = 'c'.repeat(64);

export function newNonce(): string {
  return randomBytes(16).toString('base64url');
}

export interface Harness {
  server: RunningLicenseServer;
  standIn: PaymentStandIn;
  publicKey: KeyObject;
  privateKey: KeyObject;
  dbPath: string;
  /** JSON request to the license server. */
  call(method: string, url: string, body?: unknown): Promise<{ status: number; body: any; contentType: string | null }>;
  /** Starts a checkout for `hwid` and returns its nonce. */
  checkout(hwid: string, variantId?: string): Promise<string>;
  /** Checkout, paid, polled: the bound token. */
  buy(hwid: string, variantId?: string): Promise<string>;
  /** Closes and starts the server again on the same database (a restart). */
  restart(): Promise<void>;
  /** Row counts straight from the server's SQLite file. */
  count(table: 'credits' | 'orders' | 'checkouts'): number;
}

export async function startHarness(t: TestContext, overrides: Partial<LicenseServerOptions> = {}): Promise<Harness> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netclamp-ls-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const dbPath = path.join(dir, 'license.db');
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const standIn = await PaymentStandIn.start({ variants: PACKS.map((p) => p.variant_id) });
  t.after(() => standIn.close());
  const options: LicenseServerOptions = {
    privateKey,
    webhookSecret: standIn.webhookSecret,
    provider: { url: standIn.url, apiKey: standIn.apiKey, storeId: standIn.storeId, timeoutMs: 5_000 },
    packs: PACKS,
    dbPath,
    ...overrides,
  };
  let server = await startLicenseServer(options);
  t.after(() => server.close());
  standIn.webhookUrl = `${server.url}/v1/webhooks/payment`;

  const harness: Harness = {
    get server() {
      return server;
    },
    standIn, publicKey, privateKey, dbPath,
    async call(method, url, body) {
      const response = await request(`${server.url}${url}`, method, body === undefined ? undefined : JSON.stringify(body));
      return { ...response, body: response.text === '' ? undefined : JSON.parse(response.text) };
    },
    async checkout(hwid, variantId = PACKS[0]!.variant_id) {
      const nonce = newNonce();
      const created = await harness.call('POST', '/v1/checkouts', { variant_id: variantId, hwid, nonce });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      return nonce;
    },
    async buy(hwid, variantId) {
      const nonce = await harness.checkout(hwid, variantId);
      const paid = await standIn.pay(nonce);
      assert.equal(paid.status, 200, JSON.stringify(paid.body));
      const polled = await harness.call('GET', `/v1/checkouts/${nonce}?hwid=${hwid}`);
      assert.equal(polled.status, 200, JSON.stringify(polled.body));
      return polled.body.token as string;
    },
    async restart() {
      await server.close();
      const port = Number(new URL(server.url).port);
      server = await startLicenseServer({ ...options, port });
    },
    count(table) {
      const db = new Database(dbPath, { readonly: true });
      try {
        return (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
      } finally {
        db.close();
      }
    },
  };
  return harness;
}
