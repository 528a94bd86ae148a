import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { assertProblem, makeDataDir, startTestApp } from '../helpers/app.js';
import { isLoopbackHost } from '../../lib/http/host-check.js';

test('a request without a token gets 401 with WWW-Authenticate: Bearer', async (t) => {
  const { request } = await startTestApp(t);
  const response = await request({ method: 'GET', url: '/api/v1/status', headers: { authorization: undefined } });
  const problem = assertProblem(response, 401);
  assert.match(String(response.headers['www-authenticate']), /^Bearer\b/);
  assert.equal(problem.title, 'Unauthorized');
});

test('a wrong token, a token of another length, and a non-Bearer scheme all get 401', async (t) => {
  const { request, token } = await startTestApp(t);
  const wrong = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
  for (const authorization of [`Bearer ${wrong}`, 'Bearer short', `Basic ${token}`, `Bearer ${token}x`]) {
    const response = await request({ method: 'GET', url: '/api/v1/rules', headers: { authorization } });
    assertProblem(response, 401);
    assert.match(String(response.headers['www-authenticate']), /^Bearer\b/, authorization);
  }
  const ok = await request({ method: 'GET', url: '/api/v1/rules' });
  assert.equal(ok.statusCode, 200);
});

test('the token file is created on first start, mode 0600, 32+ random bytes base64url, and kept on restart', async (t) => {
  const dataDir = makeDataDir(t);
  const first = await startTestApp(t, { dataDir });
  const file = path.join(dataDir, 'auth.token');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.match(first.token, /^[A-Za-z0-9_-]{43,}$/);
  assert.ok(Buffer.from(first.token, 'base64url').length >= 32);
  await first.close();
  const second = await startTestApp(t, { dataDir });
  assert.equal(second.token, first.token);
  const other = await startTestApp(t);
  assert.notEqual(other.token, first.token);
});

test('a Host that is not loopback is refused with 403 even with a valid token', async (t) => {
  const { request } = await startTestApp(t);
  for (const host of ['evil.example', 'evil.example:9845', '10.0.0.1:9845', '[2001:db8::1]:9845', 'localhost.evil.example']) {
    const response = await request({ method: 'GET', url: '/api/v1/status', headers: { host } });
    const problem = assertProblem(response, 403);
    assert.match(String(problem.detail), /loopback/, host);
  }
  for (const host of ['localhost', 'localhost:9845', '127.0.0.1', '127.1.2.3:80', '[::1]', '[::1]:9845', 'LOCALHOST:1']) {
    const response = await request({ method: 'GET', url: '/api/v1/status', headers: { host } });
    assert.equal(response.statusCode, 200, host);
  }
});

test('isLoopbackHost accepts loopback spellings only', () => {
  assert.equal(isLoopbackHost(undefined), false);
  assert.equal(isLoopbackHost(''), false);
  assert.equal(isLoopbackHost('[0:0:0:0:0:0:0:1]:8'), true);
  assert.equal(isLoopbackHost('[::2]'), false);
  assert.equal(isLoopbackHost('[::1]x'), false);
  assert.equal(isLoopbackHost('127.0.0.1:99999x'), false);
  assert.equal(isLoopbackHost('128.0.0.1'), false);
  assert.equal(isLoopbackHost('app.localhost:3000'), true);
});

test('unknown routes are 404 problem documents, and need the token like every endpoint', async (t) => {
  const { request } = await startTestApp(t);
  const response = await request({ method: 'GET', url: '/api/v1/nope' });
  assertProblem(response, 404);
  const wrongMethod = await request({ method: 'PATCH', url: '/api/v1/rules' });
  assertProblem(wrongMethod, 404);
  const anonymous = await request({ method: 'GET', url: '/api/v1/nope', headers: { authorization: undefined } });
  assertProblem(anonymous, 401);
});

test('a malformed JSON body is a 400 problem', async (t) => {
  const { request } = await startTestApp(t);
  const response = await request({
    method: 'POST', url: '/api/v1/rules', payload: '{"name":', headers: { 'content-type': 'application/json' },
  });
  assertProblem(response, 400);
});
