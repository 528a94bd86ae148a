/**
 * Licensing test fixtures: a test vendor key pair made at run time (never a committed key), tokens
 * signed with it, and a scriptable stand-in for the license server on loopback, for route tests that
 * need to control what the server answers (refusals, hangs, garbage). The real reference server is
 * exercised by test/e2e/licensing.test.ts.
 */
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import { rawPublicKey, signAnyPayload, signToken, type TokenPayload } from '../../lib/license/token.js';

export interface TestVendor {
  privateKey: KeyObject;
  /** What `license.testVendorKey` / NETCLAMP_TEST_VENDOR_KEY takes. */
  publicKey: string;
  /** A valid token; `overrides` may replace or (with undefined) drop fields. */
  token(overrides?: Partial<Record<keyof TokenPayload, unknown>>): string;
}

export function testVendor(): TestVendor {
  const { privateKey } = generateKeyPairSync('ed25519');
  return {
    privateKey,
    publicKey: rawPublicKey(privateKey),
    token(overrides = {}) {
      const payload: Record<string, unknown> = {
        v: 1, credit_id: randomUUID(), units: 1, hwid: null, binding: 1, variant_id: 'pack-1',
        iat: Math.floor(Date.now() / 1000), ...overrides,
      };
      for (const [key, value] of Object.entries(payload)) if (value === undefined) delete payload[key];
      return signAnyPayload(payload, privateKey);
    },
  };
}

export function payloadOf(token: string): TokenPayload {
  return JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString('utf8')) as TokenPayload;
}

export interface FakeCall {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
}

export type FakeAnswer = { status: number; body?: unknown; raw?: string } | 'hang';
export type FakeHandler = (call: FakeCall) => FakeAnswer | Promise<FakeAnswer>;

export interface FakeLicenseServer {
  url: string;
  calls: FakeCall[];
  /** Handlers by "METHOD /path" (path without the query; `:id` segments are not expanded, use `fallback`). */
  routes: Map<string, FakeHandler>;
  fallback: FakeHandler | undefined;
}

/**
 * A loopback HTTP server answering what the test scripts. `hang` never answers (the service's deadline
 * must end the call); the server is closed after the test, hung requests with it.
 */
export async function startFakeLicenseServer(t: TestContext): Promise<FakeLicenseServer> {
  const fake: FakeLicenseServer = { url: '', calls: [], routes: new Map(), fallback: undefined };
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const url = new URL(request.url ?? '/', 'http://fake');
      const text = Buffer.concat(chunks).toString('utf8');
      const call: FakeCall = { method: request.method ?? '', path: url.pathname, query: url.searchParams, body: text === '' ? undefined : JSON.parse(text) };
      fake.calls.push(call);
      const handler = fake.routes.get(`${call.method} ${call.path}`) ?? fake.fallback;
      void Promise.resolve(handler === undefined ? { status: 404, body: { detail: 'no such route' } } : handler(call)).then((answer) => {
        if (answer === 'hang') return;
        const payload = answer.raw ?? (answer.body === undefined ? '' : JSON.stringify(answer.body));
        const type = answer.status >= 400 ? 'application/problem+json' : 'application/json';
        response.writeHead(answer.status, { 'content-type': type }).end(payload);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return fake;
}

/** A problem body as the license server sends it. */
export function problem(status: number, detail: string): FakeAnswer {
  return { status, body: { type: 'about:blank', title: 'Error', status, detail } };
}

/** Signs a valid payload (for fakes that mint like the real server). */
export function sign(vendor: TestVendor, payload: TokenPayload): string {
  return signToken(payload, vendor.privateKey);
}
