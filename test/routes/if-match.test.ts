/**
 * If-Match on PUT and DELETE of rules and quotas (RFC 9110 13.1.1): strong comparison against the
 * revision's ETag, `*` for any existing resource, 409 when stale (nothing changes), 400 naming the header
 * when it is not an entity-tag list.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { assertProblem, draft, startTestApp, type TestApp } from '../helpers/app.js';
import { parseIfMatch } from '../../lib/http/if-match.js';

const MALFORMED = ['5', 'garbage', '"3', '3"', 'W/3', 'w/"1"', '"1" "2"', '*, "1"', '"1", *', '', ' , ', '"a b"'];

interface Resource {
  kind: string;
  create(app: TestApp): Promise<string>;
  body(app: TestApp): Record<string, unknown>;
}

const RULES: Resource = {
  kind: 'rules',
  async create(app) {
    const response = await app.request({ method: 'POST', url: '/api/v1/rules', payload: draft() });
    assert.equal(response.statusCode, 201, response.body);
    return (response.json() as { id: string }).id;
  },
  body: () => draft({ name: 'changed' }),
};

const QUOTAS: Resource = {
  kind: 'quotas',
  async create(app) {
    const exe = path.join(app.dataDir, 'app');
    fs.writeFileSync(exe, '#!/bin/sh\n', { mode: 0o755 });
    const response = await app.request({ method: 'POST', url: '/api/v1/quotas', payload: { name: 'cap', app_path: exe, limit_bytes: 1000 } });
    assert.equal(response.statusCode, 201, response.body);
    return (response.json() as { id: string }).id;
  },
  body: (app) => ({ name: 'changed', app_path: path.join(app.dataDir, 'app'), limit_bytes: 2000 }),
};

async function start(t: Parameters<typeof startTestApp>[0]): Promise<TestApp> {
  return startTestApp(t, { appOptions: { sampleIntervalMs: 0, quotaSampleIntervalMs: 0, quotaFlushIntervalMs: 0 } });
}

async function revisionOf(app: TestApp, resource: Resource, id: string): Promise<number> {
  const response = await app.request({ method: 'GET', url: `/api/v1/${resource.kind}/${id}` });
  assert.equal(response.statusCode, 200, response.body);
  return (response.json() as { revision: number }).revision;
}

for (const resource of [RULES, QUOTAS]) {
  test(`DELETE /${resource.kind}/{id}: a stale If-Match is 409 and deletes nothing; the current one deletes`, async (t) => {
    const app = await start(t);
    const id = await resource.create(app);
    const url = `/api/v1/${resource.kind}/${id}`;
    assert.equal((await app.request({ method: 'PUT', url, payload: resource.body(app) })).statusCode, 200);
    const stale = assertProblem(await app.request({ method: 'DELETE', url, headers: { 'if-match': '"1"' } }), 409);
    assert.match(String(stale.detail), /If-Match "1" does not match the current ETag .* \("2"\)/);
    assert.equal(await revisionOf(app, resource, id), 2, 'still there, unchanged');
    if (resource === RULES) assert.ok(app.engine.installed.has(Number(id)), 'still in the engine');

    const deleted = await app.request({ method: 'DELETE', url, headers: { 'if-match': '"7", "2"' } });
    assert.equal(deleted.statusCode, 204, deleted.body);
    assertProblem(await app.request({ method: 'GET', url }), 404);
    if (resource === RULES) assert.equal(app.engine.installed.has(Number(id)), false);
  });

  test(`DELETE /${resource.kind}/{id}: If-Match * deletes whatever the revision; an unknown id stays 404`, async (t) => {
    const app = await start(t);
    const id = await resource.create(app);
    const url = `/api/v1/${resource.kind}/${id}`;
    assert.equal((await app.request({ method: 'PUT', url, payload: resource.body(app) })).statusCode, 200);
    assert.equal((await app.request({ method: 'DELETE', url, headers: { 'if-match': '*' } })).statusCode, 204);
    assertProblem(await app.request({ method: 'DELETE', url, headers: { 'if-match': '*' } }), 404);
    // And PUT with *: any existing revision.
    const other = await resource.create(app);
    const put = await app.request({ method: 'PUT', url: `/api/v1/${resource.kind}/${other}`, payload: resource.body(app), headers: { 'if-match': '*' } });
    assert.equal(put.statusCode, 200, put.body);
  });

  test(`PUT and DELETE /${resource.kind}/{id}: a weak tag never matches (strong comparison): 409 saying so`, async (t) => {
    const app = await start(t);
    const id = await resource.create(app);
    const url = `/api/v1/${resource.kind}/${id}`;
    for (const method of ['PUT', 'DELETE'] as const) {
      const response = await app.request({
        method, url, headers: { 'if-match': 'W/"1"' }, ...(method === 'PUT' ? { payload: resource.body(app) } : {}),
      });
      const problem = assertProblem(response, 409);
      assert.match(String(problem.detail), /weak entity tags .* cannot match/);
    }
    assert.equal(await revisionOf(app, resource, id), 1, 'nothing changed');
    // A list with the strong tag next to the weak one matches.
    const put = await app.request({ method: 'PUT', url, payload: resource.body(app), headers: { 'if-match': 'W/"1", "1"' } });
    assert.equal(put.statusCode, 200, put.body);
  });

  test(`PUT and DELETE /${resource.kind}/{id}: a malformed If-Match is a 400 naming the header, and changes nothing`, async (t) => {
    const app = await start(t);
    const id = await resource.create(app);
    const url = `/api/v1/${resource.kind}/${id}`;
    for (const header of MALFORMED) {
      for (const method of ['PUT', 'DELETE'] as const) {
        const response = await app.request({
          method, url, headers: { 'if-match': header }, ...(method === 'PUT' ? { payload: resource.body(app) } : {}),
        });
        const problem = assertProblem(response, 400);
        assert.match(String(problem.detail), /^If-Match: /, `${method} with If-Match ${JSON.stringify(header)}`);
        assert.deepEqual((problem.errors as Array<{ field: string }>).map((error) => error.field), ['If-Match']);
      }
    }
    assert.equal(await revisionOf(app, resource, id), 1, 'nothing changed');
  });
}

test('DELETE of a group-owned rule is 409 whatever If-Match says', async (t) => {
  const app = await start(t);
  const installed = await app.request({
    method: 'POST', url: '/api/v1/groups/install',
    payload: { id: 'family', name: 'Family', version: '1', rules: [draft()], quotas: [] },
  });
  assert.ok([200, 201].includes(installed.statusCode), installed.body);
  const [ruleId] = (installed.json() as { rule_ids: string[] }).rule_ids;
  assertProblem(await app.request({ method: 'DELETE', url: `/api/v1/rules/${ruleId}`, headers: { 'if-match': '"1"' } }), 409);
  assertProblem(await app.request({ method: 'DELETE', url: `/api/v1/rules/${ruleId}`, headers: { 'if-match': '*' } }), 409);
  assert.equal((await app.request({ method: 'GET', url: `/api/v1/rules/${ruleId}` })).statusCode, 200);
});

test('DELETE /groups/{id}: groups have no ETag, so a tag is 409 and * deletes; malformed is 400, unknown 404', async (t) => {
  const app = await start(t);
  const installed = await app.request({
    method: 'POST', url: '/api/v1/groups/install',
    payload: { id: 'office', name: 'Office', version: '1', rules: [draft()], quotas: [] },
  });
  assert.equal(installed.statusCode, 201, installed.body);
  const url = '/api/v1/groups/office';
  const tagged = assertProblem(await app.request({ method: 'DELETE', url, headers: { 'if-match': '"1"' } }), 409);
  assert.match(String(tagged.detail), /no entity tag/);
  assertProblem(await app.request({ method: 'DELETE', url, headers: { 'if-match': 'garbage' } }), 400);
  assert.equal((await app.request({ method: 'GET', url })).statusCode, 200, 'still installed');
  assert.equal((await app.request({ method: 'DELETE', url, headers: { 'if-match': '*' } })).statusCode, 204);
  assertProblem(await app.request({ method: 'DELETE', url, headers: { 'if-match': '*' } }), 404);
  assertProblem(await app.request({ method: 'DELETE', url: '/api/v1/groups/nope', headers: { 'if-match': '"1"' } }), 404);
});

test('parseIfMatch: *, lists with empty elements and spaces, weak flags, opaque characters kept as sent', () => {
  assert.equal(parseIfMatch(undefined), undefined);
  assert.deepEqual(parseIfMatch(' * '), { any: true });
  assert.deepEqual(parseIfMatch('"1",, W/"2" ,"x/y!"'), {
    any: false,
    tags: [{ weak: false, opaque: '1' }, { weak: true, opaque: '2' }, { weak: false, opaque: 'x/y!' }],
  });
  assert.deepEqual(parseIfMatch('""'), { any: false, tags: [{ weak: false, opaque: '' }] });
});
