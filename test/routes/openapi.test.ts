import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import Fastify from 'fastify';
import { assertProblem, makeDataDir, startTestApp } from '../helpers/app.js';
import { openFakeEngine } from '../helpers/fake-engine.js';
import { serviceApp } from '../../lib/app.js';
import { RuleDraftSchema, RuleListSchema } from '../../lib/schemas/rule.js';
import { ConfigSchema } from '../../lib/schemas/config.js';

// Walking an arbitrary JSON document: `any` keeps the assertions readable.
type Json = Record<string, any>;

test('GET /openapi.json lists every registered route with its parameters, body and responses', async (t) => {
  // The route table, seen independently of the service's own catalog: our own onRoute hook.
  const dataDir = makeDataDir(t);
  const engine = await openFakeEngine();
  const app = Fastify({ logger: false });
  const registered: { method: string; url: string; schema: Json }[] = [];
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) {
      if (method !== 'HEAD') registered.push({ method, url: route.url, schema: (route.schema ?? {}) as Json });
    }
  });
  await app.register(serviceApp, { engine, dataDir });
  await app.ready();
  t.after(() => app.close());
  const token = fs.readFileSync(path.join(dataDir, 'auth.token'), 'utf8').trim();

  const response = await app.inject({ method: 'GET', url: '/api/v1/openapi.json', headers: { host: '127.0.0.1', authorization: `Bearer ${token}` } });
  assert.equal(response.statusCode, 200);
  assert.match(String(response.headers['content-type']), /^application\/json/);
  const document = JSON.parse(response.body) as Json;
  assert.match(document.openapi, /^3\.1\.\d+$/);
  assert.equal(typeof document.info.title, 'string');
  assert.equal(typeof document.info.version, 'string');

  const listed = Object.entries(document.paths as Json).flatMap(([p, operations]) =>
    Object.keys(operations as Json).map((method) => `${method.toUpperCase()} ${p}`));
  const expected = registered.map((route) => `${route.method} ${route.url.replace(/:(\w+)/g, '{$1}')}`);
  assert.deepEqual([...listed].sort(), [...expected].sort());
  for (const endpoint of [
    'GET /api/v1/status', 'GET /api/v1/rules', 'POST /api/v1/rules', 'PUT /api/v1/rules/{id}',
    'DELETE /api/v1/rules/{id}', 'POST /api/v1/rules/{id}/retry', 'POST /api/v1/rules/reconcile',
    'GET /api/v1/config', 'PUT /api/v1/config', 'POST /api/v1/auth/rotate', 'GET /api/v1/events',
    'GET /api/v1/openapi.json',
  ]) {
    assert.ok(listed.includes(endpoint), `${endpoint} is documented`);
  }

  for (const route of registered) {
    const operation = document.paths[route.url.replace(/:(\w+)/g, '{$1}')][route.method.toLowerCase()] as Json;
    const where = `${route.method} ${route.url}`;
    for (const name of [...route.url.matchAll(/:(\w+)/g)].map((m) => m[1])) {
      const parameter = (operation.parameters as Json[] | undefined)?.find((p) => p.name === name && p.in === 'path');
      assert.ok(parameter !== undefined && parameter.required === true, `${where}: path parameter ${name}`);
    }
    if (route.schema.body !== undefined) {
      assert.deepEqual(operation.requestBody.content['application/json'].schema, JSON.parse(JSON.stringify(route.schema.body)), `${where}: body`);
    }
    for (const [status, schema] of Object.entries((route.schema.response ?? {}) as Json)) {
      assert.deepEqual(operation.responses[status].content['application/json'].schema, JSON.parse(JSON.stringify(schema)), `${where}: ${status}`);
    }
    assert.ok(Object.keys(operation.responses).some((s) => s.startsWith('2')), `${where}: a success response`);
    assert.equal(operation.responses['401'].content['application/problem+json'].schema.$ref, '#/components/schemas/Problem');
    assert.equal(typeof operation.operationId, 'string');
  }
  const operationIds = registered.map((r) => document.paths[r.url.replace(/:(\w+)/g, '{$1}')][r.method.toLowerCase()].operationId);
  assert.equal(new Set(operationIds).size, operationIds.length, 'operationIds are unique');

  // The schemas are the typebox ones, not copies that could drift.
  assert.deepEqual(document.paths['/api/v1/rules'].post.requestBody.content['application/json'].schema, JSON.parse(JSON.stringify(RuleDraftSchema)));
  assert.deepEqual(document.paths['/api/v1/rules'].get.responses['200'].content['application/json'].schema, JSON.parse(JSON.stringify(RuleListSchema)));
  assert.deepEqual(document.paths['/api/v1/config'].put.requestBody.content['application/json'].schema, JSON.parse(JSON.stringify(ConfigSchema)));
  assert.ok(document.paths['/api/v1/events'].get.responses['200'].content['text/event-stream'] !== undefined);
  assert.equal(document.components.schemas.Problem.type, 'object');
  assert.ok(!JSON.stringify(document).includes('~kind'), 'no typebox internals leak into the document');
});

test('GET /openapi.json needs the token like every route', async (t) => {
  const { request } = await startTestApp(t);
  assertProblem(await request({ method: 'GET', url: '/api/v1/openapi.json', headers: { authorization: undefined } }), 401);
});
