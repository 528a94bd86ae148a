import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { assertProblem, startTestApp } from '../helpers/app.js';
import { openSse } from '../helpers/sse.js';

test('POST /auth/rotate: 200 with a new token, written 0600; the old token fails at once, the new one works', async (t) => {
  const { request, token: oldToken, dataDir } = await startTestApp(t);
  const response = await request({ method: 'POST', url: '/api/v1/auth/rotate' });
  assert.equal(response.statusCode, 200, response.body);
  assert.equal(response.headers['cache-control'], 'no-store');
  const { token } = response.json() as { token: string };
  assert.match(token, /^[A-Za-z0-9_-]{43,}$/);
  assert.ok(Buffer.from(token, 'base64url').length >= 32);
  assert.notEqual(token, oldToken);

  const file = path.join(dataDir, 'auth.token');
  assert.equal(fs.readFileSync(file, 'utf8').trim(), token);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(fs.readdirSync(dataDir).filter((name) => name.endsWith('.tmp')), [], 'no temp file left behind');

  const withOld = await request({ method: 'GET', url: '/api/v1/status' });
  assertProblem(withOld, 401);
  assert.match(String(withOld.headers['www-authenticate']), /^Bearer\b/);
  const withNew = await request({ method: 'GET', url: '/api/v1/status', headers: { authorization: `Bearer ${token}` } });
  assert.equal(withNew.statusCode, 200);

  // Rotating again with the old token is refused; with the current one it works and revokes it in turn.
  assertProblem(await request({ method: 'POST', url: '/api/v1/auth/rotate' }), 401);
  const again = await request({ method: 'POST', url: '/api/v1/auth/rotate', headers: { authorization: `Bearer ${token}` } });
  assert.equal(again.statusCode, 200);
  const third = (again.json() as { token: string }).token;
  assertProblem(await request({ method: 'GET', url: '/api/v1/rules', headers: { authorization: `Bearer ${token}` } }), 401);
  assert.equal((await request({ method: 'GET', url: '/api/v1/rules', headers: { authorization: `Bearer ${third}` } })).statusCode, 200);
});

test('POST /auth/rotate without a token is 401 and changes nothing', async (t) => {
  const { request, token, dataDir } = await startTestApp(t);
  const response = await request({ method: 'POST', url: '/api/v1/auth/rotate', headers: { authorization: undefined } });
  assertProblem(response, 401);
  assert.equal(fs.readFileSync(path.join(dataDir, 'auth.token'), 'utf8').trim(), token);
  assert.equal((await request({ method: 'GET', url: '/api/v1/status' })).statusCode, 200);
});

test('the rotated token is the one a restarted service accepts', async (t) => {
  const first = await startTestApp(t);
  const rotated = (await first.request({ method: 'POST', url: '/api/v1/auth/rotate' })).json() as { token: string };
  await first.close();
  const second = await startTestApp(t, { dataDir: first.dataDir });
  assert.equal(second.token, rotated.token);
  assertProblem(await second.request({ method: 'GET', url: '/api/v1/status', headers: { authorization: `Bearer ${first.token}` } }), 401);
});

test('GET /auth/rotate and unknown /auth routes are 404 problems', async (t) => {
  const { request } = await startTestApp(t);
  assertProblem(await request({ method: 'GET', url: '/api/v1/auth/rotate' }), 404);
  assertProblem(await request({ method: 'POST', url: '/api/v1/auth/nothing' }), 404);
});

test('rotation ends the SSE streams opened with the old token; a stream with the new token works', async (t) => {
  const { app, request, token: oldToken } = await startTestApp(t);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}/api/v1/events`;
  const before = await openSse(url, { authorization: `Bearer ${oldToken}` });
  t.after(() => before.close());
  assert.equal(before.status, 200);
  await before.waitFor(() => app.netclamp.eventStream.clientCount === 1, 2000, 'stream attached');

  const { token } = (await request({ method: 'POST', url: '/api/v1/auth/rotate' })).json() as { token: string };
  await before.waitFor((c) => c.ended(), 2000, 'the old stream to end');
  assert.equal(app.netclamp.eventStream.clientCount, 0);

  const refused = await openSse(url, { authorization: `Bearer ${oldToken}` });
  t.after(() => refused.close());
  assert.equal(refused.status, 401);
  const after = await openSse(url, { authorization: `Bearer ${token}` });
  t.after(() => after.close());
  assert.equal(after.status, 200);
  app.netclamp.events.emit('license_changed', { used: 0, cap: 3 });
  await after.waitFor((c) => c.events.length === 1, 2000, 'an event on the new stream');
});
