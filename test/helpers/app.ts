/**
 * Route-test harness: a service app on a temp data dir with a fake engine, and `request` that adds the
 * bearer token and a loopback Host (the way a local client would call).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { buildApp, type BuildAppOptions } from '../../lib/app.js';
import { TOKEN_FILE } from '../../lib/services/auth-token.js';
import { FakeEngine, openFakeEngine } from './fake-engine.js';

export interface TestApp {
  app: FastifyInstance;
  engine: FakeEngine;
  dataDir: string;
  token: string;
  /** Authenticated request; `headers` override the defaults. */
  request(options: InjectOptions): Promise<LightMyRequestResponse>;
  close(): Promise<void>;
}

export function makeDataDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netclamp-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function startTestApp(
  t: TestContext,
  options: {
    dataDir?: string; engine?: FakeEngine; counterFlushIntervalMs?: number;
    /** Anything else buildApp takes (clocks, timer periods). */
    appOptions?: Partial<BuildAppOptions>;
  } = {},
): Promise<TestApp> {
  const dataDir = options.dataDir ?? makeDataDir(t);
  const engine = options.engine ?? await openFakeEngine();
  // Counters as of each request (tests count traffic step by step), unless a test is about their reuse.
  const app = await buildApp({ counterMaxAgeMs: 0, ...options.appOptions, engine, dataDir, counterFlushIntervalMs: options.counterFlushIntervalMs });
  const token = fs.readFileSync(path.join(dataDir, TOKEN_FILE), 'utf8').trim();
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await app.close();
  };
  t.after(close);
  return {
    app, engine, dataDir, token, close,
    request(injectOptions) {
      const merged: Record<string, unknown> = { host: '127.0.0.1:9845', authorization: `Bearer ${token}`, ...injectOptions.headers };
      // A header given as undefined means "send none" (e.g. no Authorization).
      const headers = Object.fromEntries(Object.entries(merged).filter(([, value]) => value !== undefined));
      return app.inject({ ...injectOptions, headers: headers as InjectOptions['headers'] });
    },
  };
}

/** A valid draft, overridable field by field. */
export function draft(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'Block everything', app_path: '', action: 'BLOCK', ...overrides };
}

export function assertProblem(response: LightMyRequestResponse, status: number): Record<string, unknown> {
  if (response.statusCode !== status) {
    throw new Error(`expected ${status}, got ${response.statusCode}: ${response.body}`);
  }
  const type = String(response.headers['content-type']);
  if (!type.startsWith('application/problem+json')) throw new Error(`expected a problem document, got ${type}`);
  const body = response.json() as Record<string, unknown>;
  for (const key of ['type', 'title', 'status', 'detail']) {
    if (!(key in body)) throw new Error(`problem document lacks ${key}: ${response.body}`);
  }
  if (body.status !== status) throw new Error(`problem status ${String(body.status)} != ${status}`);
  return body;
}
