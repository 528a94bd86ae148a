/**
 * What 400 and 415 problem documents say: every offending field, and a reason a client can act on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertProblem, draft, startTestApp } from '../helpers/app.js';

test('a 400 names every offending field, not only the first eight (PUT of a GET body)', async (t) => {
  const { request } = await startTestApp(t);
  const created = (await request({ method: 'POST', url: '/api/v1/rules', payload: draft() })).json() as Record<string, unknown>;
  const readOnly = ['id', 'sync_state', 'sync_error', 'group_id', 'created_at', 'updated_at', 'bytes_up', 'bytes_down', 'blocked_count'];
  const problem = assertProblem(await request({ method: 'PUT', url: `/api/v1/rules/${String(created.id)}`, payload: created }), 400);
  const fields = (problem.errors as Array<{ field: string; message: string }>).map((e) => e.field).sort();
  assert.deepEqual(fields, [...readOnly].sort());
  for (const field of readOnly) assert.match(String(problem.detail), new RegExp(`(^|; )${field}: unknown field`));
});

test('a 400 of a group bundle names every bad rule', async (t) => {
  const { request } = await startTestApp(t);
  const rules = Array.from({ length: 12 }, (_, i) => ({ name: `r${i}`, app_path: '', action: 'BLOCK', remote_port: 70000 }));
  const problem = assertProblem(await request({
    method: 'POST', url: '/api/v1/groups/install', payload: { id: 'many', name: 'Many', version: '1', rules, quotas: [] },
  }), 400);
  const fields = (problem.errors as Array<{ field: string }>).map((e) => e.field);
  assert.deepEqual(fields, rules.map((_, i) => `rules[${i}].remote_port`));
});

test('a repeated query parameter is a 400 saying to give it once', async (t) => {
  const { request } = await startTestApp(t);
  const problem = assertProblem(await request({ method: 'GET', url: '/api/v1/throughput?window=60&window=2' }), 400);
  assert.equal(problem.detail, 'window: give it once');
  // A single bad value still says what a window is.
  assert.match(String(assertProblem(await request({ method: 'GET', url: '/api/v1/throughput?window=x' }), 400).detail), /^window: must be an integer/);
});

test('415 says the API takes application/json, and what was sent', async (t) => {
  const { request } = await startTestApp(t);
  for (const contentType of ['text/plain', 'application/x-www-form-urlencoded']) {
    const problem = assertProblem(await request({
      method: 'POST', url: '/api/v1/rules', payload: 'name=x', headers: { 'content-type': contentType },
    }), 415);
    assert.match(String(problem.detail), /application\/json/);
    assert.ok(String(problem.detail).includes(contentType), String(problem.detail));
  }
});

test('a path that is not absolute for this platform says which platform (the reference example is a Windows path)', async (t) => {
  const { request } = await startTestApp(t);
  const platform = process.platform === 'win32' ? 'Windows' : 'Linux';
  const foreign = process.platform === 'win32' ? '/usr/bin/curl' : 'C:\\Path\\To\\app.exe';
  const rule = assertProblem(await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: foreign }) }), 400);
  assert.equal(rule.detail, `app_path: must be empty (every application) or an absolute ${platform} path`);
  const quota = assertProblem(await request({
    method: 'POST', url: '/api/v1/quotas', payload: { name: 'q', app_path: foreign, limit_bytes: 1000 },
  }), 400);
  assert.equal(quota.detail, `app_path: must be an absolute ${platform} path (a quota counts one application)`);
});
