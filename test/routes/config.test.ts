import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'smol-toml';
import { assertProblem, makeDataDir, startTestApp } from '../helpers/app.js';
import { openFakeEngine } from '../helpers/fake-engine.js';
import { plainRequest } from '../helpers/sse.js';
import { serve } from '../../lib/server.js';
import type { BusEvent } from '../../lib/services/event-bus.js';

const DEFAULTS = {
  server: { listen: '127.0.0.1:9845' },
  log: { level: 'info' },
  events: { heartbeat_sec: 15, replay_buffer: 1000 },
  license: { server_url: '' },
};

function configEvents(bus: { since(id: number): { events: BusEvent[] } }): BusEvent[] {
  return bus.since(0).events.filter((e) => e.name === 'config_reloaded' || e.name === 'config_error');
}

async function waitUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
  return Date.now() - started;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test('GET /config: the file as JSON with every default filled in', async (t) => {
  const dataDir = makeDataDir(t);
  fs.writeFileSync(path.join(dataDir, 'config.toml'), '[log]\nlevel = "warn"\n');
  const { request } = await startTestApp(t, { dataDir });
  const response = await request({ method: 'GET', url: '/api/v1/config' });
  assert.equal(response.statusCode, 200);
  assert.deepEqual(response.json(), { ...DEFAULTS, log: { level: 'warn' } });
});

test('PUT /config: 200, written atomically as TOML (0600), applied at once, one config_reloaded', async (t) => {
  const { request, app, dataDir } = await startTestApp(t);
  const body = { log: { level: 'debug' }, events: { replay_buffer: 2, heartbeat_sec: 5 }, license: { server_url: 'https://licenses.example.test/' } };
  const response = await request({ method: 'PUT', url: '/api/v1/config', payload: body });
  assert.equal(response.statusCode, 200, response.body);
  const expected = { ...DEFAULTS, ...body, events: { heartbeat_sec: 5, replay_buffer: 2 } };
  assert.deepEqual(response.json(), expected);
  assert.deepEqual((await request({ method: 'GET', url: '/api/v1/config' })).json(), expected);

  const file = path.join(dataDir, 'config.toml');
  assert.deepEqual(JSON.parse(JSON.stringify(parse(fs.readFileSync(file, 'utf8')))), expected);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(fs.readdirSync(dataDir).filter((name) => name.endsWith('.tmp')), []);

  // Applied: the log level, and the replay ring now holds 2 events.
  assert.equal(app.log.level, 'debug');
  const bus = app.netclamp.events;
  for (let i = 0; i < 3; i++) bus.emit('license_changed', { used: i, cap: 3 });
  assert.equal(bus.since(0).events.length, 2);

  // Our own write is not reported again by the file watcher (wait well past its debounce).
  const before = bus.upcomingId;
  await sleep(600);
  assert.equal(bus.upcomingId, before, 'no event after the PUT settled');

  const fresh = await startTestApp(t);
  await fresh.request({ method: 'PUT', url: '/api/v1/config', payload: { log: { level: 'error' } } });
  await sleep(600);
  const events = configEvents(fresh.app.netclamp.events);
  assert.equal(events.length, 1, JSON.stringify(events));
  assert.deepEqual(events[0]!.data, { source: 'api', changed: ['log.level'] });
});

test('PUT /config: 400 naming the field, unknown keys refused, nothing written or applied', async (t) => {
  const { request, app, dataDir } = await startTestApp(t);
  const file = path.join(dataDir, 'config.toml');
  const original = fs.readFileSync(file, 'utf8');
  const cases: [unknown, string, RegExp][] = [
    [{ server: { listen: 'nohost' } }, 'server.listen', /HOST:PORT/],
    [{ server: { listen: '127.0.0.1:70000' } }, 'server.listen', /65535/],
    [{ server: { port: 1 } }, 'server.port', /unknown field/],
    [{ colour: 'blue' }, 'colour', /unknown field/],
    [{ log: { level: 'loud' } }, 'log.level', /must be one of/],
    [{ events: { heartbeat_sec: 0 } }, 'events.heartbeat_sec', /1/],
    [{ events: { heartbeat_sec: 16 } }, 'events.heartbeat_sec', /15/],
    [{ events: { replay_buffer: 'many' } }, 'events.replay_buffer', /integer/],
    [{ license: { server_url: 'ftp://x' } }, 'license.server_url', /http/],
  ];
  for (const [body, field, message] of cases) {
    const response = await request({ method: 'PUT', url: '/api/v1/config', payload: body as object });
    const problem = assertProblem(response, 400);
    assert.ok(String(problem.detail).startsWith(`${field}: `), `${JSON.stringify(body)} -> ${String(problem.detail)}`);
    assert.match(String(problem.detail), message);
    assert.ok((problem.errors as { field: string }[]).some((e) => e.field === field));
  }
  assertProblem(await request({ method: 'PUT', url: '/api/v1/config', payload: '[1]', headers: { 'content-type': 'application/json' } }), 400);
  assert.equal(fs.readFileSync(file, 'utf8'), original);
  assert.deepEqual((await request({ method: 'GET', url: '/api/v1/config' })).json(), DEFAULTS);
  assert.equal(app.log.level, 'info');
  assert.deepEqual(configEvents(app.netclamp.events), []);
});

test('/config: 401 without a token, 404 for what does not exist', async (t) => {
  const { request } = await startTestApp(t);
  for (const method of ['GET', 'PUT'] as const) {
    const response = await request({ method, url: '/api/v1/config', payload: method === 'PUT' ? {} : undefined, headers: { authorization: undefined } });
    assertProblem(response, 401);
  }
  assertProblem(await request({ method: 'GET', url: '/api/v1/config/server' }), 404);
  assertProblem(await request({ method: 'POST', url: '/api/v1/config' }), 404);
});

test('an external edit of config.toml is applied within 2 s and sends config_reloaded', async (t) => {
  const { request, app, dataDir } = await startTestApp(t);
  const bus = app.netclamp.events;
  const started = Date.now();
  fs.writeFileSync(path.join(dataDir, 'config.toml'), '# edited by hand\n[log]\nlevel = "trace"\n\n[events]\nheartbeat_sec = 3\n');
  await waitUntil(() => app.log.level === 'trace', 2000, 'the edit to be applied');
  const elapsed = Date.now() - started;
  const body = (await request({ method: 'GET', url: '/api/v1/config' })).json() as typeof DEFAULTS;
  assert.equal(body.log.level, 'trace');
  assert.equal(body.events.heartbeat_sec, 3);
  const events = configEvents(bus);
  assert.equal(events.length, 1);
  assert.deepEqual(events[0]!.data, { source: 'file', changed: ['log.level', 'events.heartbeat_sec'] });
  assert.match(fs.readFileSync(path.join(dataDir, 'config.toml'), 'utf8'), /edited by hand/, 'the user\'s file is left as written');
  t.diagnostic(`external edit applied after ${elapsed} ms`);
});

test('an invalid external edit changes nothing and sends config_error naming the field', async (t) => {
  const { request, app, dataDir } = await startTestApp(t);
  const bus = app.netclamp.events;
  const file = path.join(dataDir, 'config.toml');
  for (const [content, field] of [
    ['[log]\nlevel = "loud"\n', 'log.level'],
    ['[server]\nlisten = "nohost"\n', 'server.listen'],
    ['[log\nlevel = "debug"\n', '(toml)'],
    ['[events]\nheartbeat_sec = 1\nbogus = 1\n', 'events.bogus'],
  ] as const) {
    const count = configEvents(bus).length;
    fs.writeFileSync(file, content);
    await waitUntil(() => configEvents(bus).length > count, 2000, `config_error for ${field}`);
    const event = configEvents(bus).at(-1)!;
    assert.equal(event.name, 'config_error');
    const data = event.data as { source: string; detail: string; errors: { field: string }[] };
    assert.equal(data.source, 'file');
    assert.ok(data.errors.some((e) => e.field === field), JSON.stringify(data));
    assert.match(data.detail, /last good config stays in effect/);
  }
  assert.deepEqual((await request({ method: 'GET', url: '/api/v1/config' })).json(), DEFAULTS);
  assert.equal(app.log.level, 'info');
  assert.equal(configEvents(bus).filter((e) => e.name === 'config_reloaded').length, 0);

  // Fixing the file applies it.
  fs.writeFileSync(file, '[log]\nlevel = "warn"\n');
  await waitUntil(() => app.log.level === 'warn', 2000, 'the fixed file to be applied');
});

test('PUT [server] listen moves the service: the reply arrives, the new port answers, the old one stops', async (t) => {
  const dataDir = makeDataDir(t);
  const server = await serve({ dataDir, listen: '127.0.0.1:0', engineFactory: openFakeEngine });
  t.after(() => server.close());
  const token = fs.readFileSync(path.join(dataDir, 'auth.token'), 'utf8').trim();
  const auth = { authorization: `Bearer ${token}` };
  const oldUrl = server.url;
  assert.equal((await plainRequest(`${oldUrl}/api/v1/status`, { headers: auth })).status, 200);

  const port = await freePort();
  const put = await plainRequest(`${oldUrl}/api/v1/config`, { method: 'PUT', headers: auth, body: { server: { listen: `127.0.0.1:${port}` } } });
  assert.equal(put.status, 200, put.body);
  assert.equal(put.json<typeof DEFAULTS>().server.listen, `127.0.0.1:${port}`);
  assert.equal(server.url, `http://127.0.0.1:${port}`);

  const moved = await plainRequest(`http://127.0.0.1:${port}/api/v1/config`, { headers: auth });
  assert.equal(moved.status, 200);
  assert.equal(moved.json<typeof DEFAULTS>().server.listen, `127.0.0.1:${port}`);
  await assert.rejects(plainRequest(`${oldUrl}/api/v1/status`, { headers: auth }), /ECONNREFUSED/);
  assert.match(fs.readFileSync(path.join(dataDir, 'config.toml'), 'utf8'), new RegExp(`listen = "127.0.0.1:${port}"`));

  // An address that cannot be bound is a 400 naming server.listen, and nothing moves.
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  t.after(() => { blocker.close(); });
  const taken = (blocker.address() as net.AddressInfo).port;
  const refused = await plainRequest(`${server.url}/api/v1/config`, { method: 'PUT', headers: auth, body: { server: { listen: `127.0.0.1:${taken}` } } });
  assert.equal(refused.status, 400, refused.body);
  assert.match(refused.json<{ detail: string }>().detail, /^server\.listen: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
  assert.equal((await plainRequest(`http://127.0.0.1:${port}/api/v1/status`, { headers: auth })).status, 200);
  assert.equal(server.url, `http://127.0.0.1:${port}`);

  // An external edit of the listen address moves it too.
  const third = await freePort();
  fs.writeFileSync(path.join(dataDir, 'config.toml'), `[server]\nlisten = "127.0.0.1:${third}"\n`);
  const elapsed = await waitUntil(() => server.url === `http://127.0.0.1:${third}`, 2000, 'the edited address');
  assert.equal((await plainRequest(`http://127.0.0.1:${third}/api/v1/status`, { headers: auth })).status, 200);
  await assert.rejects(plainRequest(`http://127.0.0.1:${port}/api/v1/status`, { headers: auth }), /ECONNREFUSED/);
  t.diagnostic(`listen edit applied after ${elapsed} ms`);
});
