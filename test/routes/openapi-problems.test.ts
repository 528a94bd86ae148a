/**
 * /openapi.json lists the problem statuses each operation really answers, and names the address the
 * service is reached at. The walk checks the document's own rules; the sample provokes statuses through
 * the API and checks each one is declared for its operation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { draft, startTestApp, type TestApp } from '../helpers/app.js';

// Walking an arbitrary JSON document: `any` keeps the assertions readable.
type Json = Record<string, any>;

async function openApi(app: TestApp, host = '127.0.0.1:9845'): Promise<Json> {
  const response = await app.request({ method: 'GET', url: '/api/v1/openapi.json', headers: { host } });
  assert.equal(response.statusCode, 200);
  return response.json() as Json;
}

function statusesOf(document: Json, method: string, path: string): string[] {
  const operation = document.paths[path]?.[method.toLowerCase()] as Json | undefined;
  assert.ok(operation, `${method} ${path} is documented`);
  return Object.keys(operation.responses as Json);
}

test('every operation lists the problems every route can give, and nothing a route cannot answer', async (t) => {
  const app = await startTestApp(t);
  const document = await openApi(app);
  for (const [path, operations] of Object.entries(document.paths as Json)) {
    for (const [method, operation] of Object.entries(operations as Json)) {
      const where = `${method.toUpperCase()} ${path}`;
      const statuses = Object.keys(operation.responses as Json);
      for (const status of statuses) {
        assert.match(status, /^[1-5]\d\d$/, where);
        if (Number(status) >= 400) {
          assert.equal(operation.responses[status].content['application/problem+json'].schema.$ref, '#/components/schemas/Problem', `${where} ${status}`);
          assert.ok(String(operation.responses[status].description).length > 0, `${where} ${status} says why`);
        }
      }
      for (const status of ['401', '403', '500']) assert.ok(statuses.includes(status), `${where}: ${status}`);
      const hasBody = method === 'post' || method === 'put';
      for (const status of ['413', '415']) assert.equal(statuses.includes(status), hasBody, `${where}: ${status} iff it takes a body`);
      if (path.includes('{')) assert.ok(statuses.includes('404'), `${where}: 404 with path parameters`);
    }
  }
  const has = (method: string, path: string, status: string): boolean => statusesOf(document, method, path).includes(status);
  // Ids are plain strings: a non-numeric id is a 404, so id-only routes declare no 400.
  for (const [method, path] of [['GET', '/api/v1/rules/{id}'], ['GET', '/api/v1/quotas/{id}'], ['GET', '/api/v1/apps/{pid}'],
    ['GET', '/api/v1/groups/{id}'], ['POST', '/api/v1/quotas/{id}/reset'], ['GET', '/api/v1/status'], ['GET', '/api/v1/rules']]) {
    assert.ok(!has(method!, path!, '400'), `${method} ${path}: no 400`);
  }
  for (const [method, path] of [['GET', '/api/v1/status'], ['GET', '/api/v1/rules'], ['PUT', '/api/v1/config'], ['POST', '/api/v1/rules']]) {
    assert.ok(!has(method!, path!, '404'), `${method} ${path}: no 404`);
  }
  for (const [method, path, statuses] of [
    ['POST', '/api/v1/rules', ['400', '402', '503']],
    ['PUT', '/api/v1/rules/{id}', ['400', '402', '404', '409', '503']],
    ['DELETE', '/api/v1/rules/{id}', ['404', '409', '503']],
    ['POST', '/api/v1/rules/{id}/retry', ['404', '503']],
    ['POST', '/api/v1/rules/reconcile', ['503']],
    ['POST', '/api/v1/quotas', ['400', '402']],
    ['PUT', '/api/v1/quotas/{id}', ['400', '402', '404', '409']],
    ['DELETE', '/api/v1/quotas/{id}', ['404', '409']],
    ['POST', '/api/v1/groups/install', ['400', '402', '409', '503']],
    ['POST', '/api/v1/groups/subscribe', ['400', '402', '409', '502', '503', '504']],
    ['POST', '/api/v1/groups/{id}/refresh', ['402', '404', '409', '502', '503', '504']],
    ['DELETE', '/api/v1/groups/{id}', ['404', '409', '503']],
    ['POST', '/api/v1/license/transfer/{credit_id}', ['400', '404', '409', '502', '503', '504']],
    ['POST', '/api/v1/license/rebind', ['400', '409', '502', '503', '504']],
    ['POST', '/api/v1/billing/checkout', ['400', '429', '502', '503', '504']],
    ['GET', '/api/v1/billing/check/{nonce}', ['400', '404', '429', '502', '503', '504']],
    ['GET', '/api/v1/billing/packs', ['429', '502', '503', '504']],
    ['GET', '/api/v1/throughput', ['400']],
  ] as const) {
    for (const status of statuses) assert.ok(has(method, path, status), `${method} ${path}: ${status}`);
  }
});

test('statuses the API answers are declared for their operation (a sample)', async (t) => {
  const app = await startTestApp(t, { appOptions: { engineCheckIntervalMs: 60_000 } });
  const document = await openApi(app);
  const seen: string[] = [];
  const check = async (method: string, url: string, path: string, expected: number, options: Json = {}): Promise<Json> => {
    const response = await app.request({ method: method as 'GET', url, ...options });
    assert.equal(response.statusCode, expected, `${method} ${url}: ${response.body}`);
    assert.ok(statusesOf(document, method, path).includes(String(expected)), `${method} ${path} declares ${expected}`);
    seen.push(`${expected}`);
    return response.json() as Json;
  };
  await check('POST', '/api/v1/rules', '/api/v1/rules', 415, { payload: 'x', headers: { 'content-type': 'text/plain' } });
  await check('POST', '/api/v1/rules', '/api/v1/rules', 413, { payload: { name: 'x'.repeat(1_100_000), app_path: '', action: 'BLOCK' } });
  const limit = (name: string): Json => draft({ name, action: 'LIMIT', rate_limit_down_bytes_per_sec: 1000 });
  const first = await check('POST', '/api/v1/rules', '/api/v1/rules', 201, { payload: limit('a') });
  for (const name of ['b', 'c']) await check('POST', '/api/v1/rules', '/api/v1/rules', 201, { payload: limit(name) });
  await check('POST', '/api/v1/rules', '/api/v1/rules', 402, { payload: limit('d') });
  await check('PUT', `/api/v1/rules/${first.id}`, '/api/v1/rules/{id}', 409, { payload: { ...limit('a'), revision: 7 } });
  await check('GET', '/api/v1/rules/abc', '/api/v1/rules/{id}', 404);
  await check('GET', '/api/v1/throughput?window=0', '/api/v1/throughput', 400);
  await check('POST', '/api/v1/license/transfer/not-a-uuid', '/api/v1/license/transfer/{credit_id}', 400);
  await check('POST', '/api/v1/license/transfer/2b8f4c1e-9d3a-4f6b-8c2d-1e5f7a9b0c3d', '/api/v1/license/transfer/{credit_id}', 404);
  await check('GET', '/api/v1/billing/packs', '/api/v1/billing/packs', 503);
  await check('GET', `/api/v1/billing/check/${'n'.repeat(32)}`, '/api/v1/billing/check/{nonce}', 404);
  await check('POST', '/api/v1/groups/subscribe', '/api/v1/groups/subscribe', 400, { payload: { url: 'ftp://example.com/b.json', interval_sec: 3600 } });
  await check('POST', '/api/v1/groups/nope/refresh', '/api/v1/groups/{id}/refresh', 404);
  app.engine.goDown();
  await check('POST', '/api/v1/rules', '/api/v1/rules', 503, { payload: draft() });
  await check('POST', '/api/v1/rules/reconcile', '/api/v1/rules/reconcile', 503);
  assert.deepEqual([...new Set(seen)].sort(), ['201', '400', '402', '404', '409', '413', '415', '503']);
});

test('servers names the address the request reached, not a constant', async (t) => {
  const app = await startTestApp(t);
  assert.deepEqual((await openApi(app, '127.0.0.1:19845')).servers, [{ url: 'http://127.0.0.1:19845' }]);
  assert.deepEqual((await openApi(app, 'localhost:4321')).servers, [{ url: 'http://localhost:4321' }]);
  assert.deepEqual((await openApi(app, '[::1]:9000')).servers, [{ url: 'http://[::1]:9000' }]);
});
