import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { assertProblem, draft, makeDataDir, startTestApp, type TestApp } from '../helpers/app.js';
import { openSse, type SseClient } from '../helpers/sse.js';
import { EventBus, EVENT_NAMES } from '../../lib/services/event-bus.js';

interface LiveApp extends TestApp {
  url: string;
  connect(headers?: Record<string, string>): Promise<SseClient>;
}

/** A service on 127.0.0.1:<free port>, with config.toml written first when given. */
async function startLive(t: TestContext, configToml?: string): Promise<LiveApp> {
  const dataDir = makeDataDir(t);
  if (configToml !== undefined) fs.writeFileSync(path.join(dataDir, 'config.toml'), configToml);
  const testApp = await startTestApp(t, { dataDir });
  await testApp.app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = testApp.app.server.address() as net.AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  const clients: SseClient[] = [];
  t.after(() => { for (const client of clients) client.close(); });
  return {
    ...testApp,
    url,
    async connect(headers = {}) {
      const client = await openSse(`${url}/api/v1/events`, { authorization: `Bearer ${testApp.token}`, ...headers });
      clients.push(client);
      return client;
    },
  };
}

test('GET /events without a token is 401; with one it is a text/event-stream', async (t) => {
  const live = await startLive(t);
  const anonymous = await live.request({ method: 'GET', url: '/api/v1/events', headers: { authorization: undefined } });
  assertProblem(anonymous, 401);
  assert.match(String(anonymous.headers['www-authenticate']), /^Bearer\b/);
  const wrong = await live.connect({ authorization: 'Bearer nope' });
  assert.equal(wrong.status, 401);
  const client = await live.connect();
  assert.equal(client.status, 200);
  assert.match(String(client.headers['content-type']), /^text\/event-stream/);
  assert.match(String(client.headers['cache-control']), /no-cache/);
});

test('events arrive with increasing ids, their name and a JSON data line, to every client', async (t) => {
  const live = await startLive(t);
  const clients = await Promise.all([1, 2, 3, 4, 5].map(() => live.connect()));
  await clients[0]!.waitFor(() => live.app.netclamp.eventStream.clientCount === 5, 2000, '5 clients');
  const bus = live.app.netclamp.events;
  bus.emit('quota_exceeded', { quota_id: '7', name: 'daily', used_bytes: 21, limit_bytes: 20, on_exceed: 'BLOCK', period_end: null });
  bus.emit('group_error', { group_id: 'g', detail: 'line one\nline two' }); // a newline must not break framing
  bus.emit('license_changed', { used: 1, cap: 3 });
  for (const client of clients) {
    await client.waitFor((c) => c.events.length === 3, 3000, 'three events');
    assert.deepEqual(client.events.map((e) => e.event), ['quota_exceeded', 'group_error', 'license_changed']);
    const ids = client.events.map((e) => e.id!);
    assert.ok(ids.every((id) => Number.isInteger(id)), `${ids}`);
    assert.ok(ids[0]! < ids[1]! && ids[1]! < ids[2]!, `ids increase: ${ids}`);
    assert.deepEqual(client.events[1]!.data, { group_id: 'g', detail: 'line one\nline two' });
  }
});

test('Last-Event-ID replays exactly the events after that id, then streams live ones', async (t) => {
  const live = await startLive(t);
  const bus = live.app.netclamp.events;
  const emitted = [1, 2, 3, 4, 5].map((used) => bus.emit('license_changed', { used, cap: 10 }));
  const client = await live.connect({ 'last-event-id': String(emitted[1]!.id) });
  await client.waitFor((c) => c.events.length === 3, 3000, 'replay');
  assert.deepEqual(client.events.map((e) => e.id), emitted.slice(2).map((e) => e.id));
  assert.deepEqual(client.events.map((e) => (e.data as { used: number }).used), [3, 4, 5]);
  assert.ok(!client.comments.some((c) => c.startsWith('replay-incomplete')));
  const next = bus.emit('license_changed', { used: 6, cap: 10 });
  await client.waitFor((c) => c.events.length === 4, 3000, 'live event after replay');
  assert.equal(client.events[3]!.id, next.id);

  // The newest id: nothing to replay. No header: nothing replayed either.
  const upToDate = await live.connect({ 'last-event-id': String(next.id) });
  const fresh = await live.connect();
  bus.emit('license_changed', { used: 7, cap: 10 });
  for (const c of [upToDate, fresh]) {
    await c.waitFor((x) => x.events.length === 1, 3000, 'one live event');
    assert.equal((c.events[0]!.data as { used: number }).used, 7);
  }
});

test('a Last-Event-ID older than the buffer replays everything buffered and says so', async (t) => {
  const live = await startLive(t, '[events]\nreplay_buffer = 3\n');
  const bus = live.app.netclamp.events;
  const emitted = [1, 2, 3, 4, 5, 6].map((used) => bus.emit('license_changed', { used, cap: 10 }));
  const client = await live.connect({ 'last-event-id': String(emitted[0]!.id) });
  await client.waitFor((c) => c.events.length === 3, 3000, 'buffered events');
  assert.deepEqual(client.events.map((e) => e.id), emitted.slice(3).map((e) => e.id));
  assert.ok(client.comments.some((c) => c.startsWith(`replay-incomplete events after id ${emitted[0]!.id}`)), client.text());
  // The edge of the buffer is not a gap: id 3 was the last evicted one, 4.. are all here.
  const edge = await live.connect({ 'last-event-id': String(emitted[2]!.id) });
  await edge.waitFor((c) => c.events.length === 3, 3000, 'buffered events');
  assert.ok(!edge.comments.some((c) => c.startsWith('replay-incomplete')), edge.text());
});

test('a heartbeat comment arrives every [events] heartbeat_sec', async (t) => {
  const live = await startLive(t, '[events]\nheartbeat_sec = 1\n');
  const client = await live.connect();
  const started = Date.now();
  await client.waitFor((c) => c.comments.filter((x) => x === 'hb').length >= 2, 3500, 'two heartbeats');
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 900, `two heartbeats took ${elapsed} ms: too fast for a 1 s period`);
});

test('a client that never reads is dropped; a reading client keeps receiving everything', async (t) => {
  const live = await startLive(t);
  const hub = live.app.netclamp.eventStream;
  const reader = await live.connect();

  // The slow client: a raw socket that sends the request and then never reads.
  const { port } = new URL(live.url);
  const slow = net.connect(Number(port), '127.0.0.1');
  t.after(() => { slow.destroy(); });
  await new Promise<void>((resolve) => slow.once('connect', () => resolve()));
  slow.write(`GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${live.token}\r\n\r\n`);
  slow.pause();
  await reader.waitFor(() => hub.clientCount === 2, 3000, 'both clients attached');

  // 32 KiB per event; 800 of them is 25 MiB, far more than the kernel's socket buffers plus the 1 MiB
  // per-client backlog. Each event is emitted once the reader has the previous one, so the reader never
  // falls behind, while the slow client's backlog only grows.
  const detail = 'x'.repeat(32 * 1024);
  const total = 800;
  let droppedAfter: number | undefined;
  for (let i = 0; i < total; i++) {
    live.app.netclamp.events.emit('group_error', { group_id: String(i), detail });
    await reader.waitFor((c) => c.events.length === i + 1, 5000, `event ${i}`);
    if (droppedAfter === undefined && hub.clientCount === 1) droppedAfter = i + 1;
  }
  assert.ok(droppedAfter !== undefined, 'the slow client was dropped');
  assert.equal(hub.clientCount, 1, 'only the reader is left');
  assert.equal(reader.events.length, total);
  assert.ok(!reader.ended());

  // What the slow client gets when it finally reads: a cut-off stream, not all 800 events.
  let received = '';
  slow.setEncoding('utf8');
  slow.on('data', (chunk: string) => { received += chunk; });
  const closed = new Promise<void>((resolve) => slow.once('close', () => resolve()));
  slow.on('error', () => {});
  slow.resume();
  await closed;
  const slowEvents = received.split('\n\n').filter((block) => block.includes('event: group_error')).length;
  assert.ok(slowEvents < total, `slow client got ${slowEvents} of ${total} events before it was cut off`);
  t.diagnostic(`slow client dropped after ${droppedAfter} events; it had received ${slowEvents}`);
});

test('a client that disconnects is removed; closing the service ends every stream', async (t) => {
  const live = await startLive(t);
  const hub = live.app.netclamp.eventStream;
  const [a, b] = [await live.connect(), await live.connect()];
  await a.waitFor(() => hub.clientCount === 2, 2000, 'two clients');
  a.close();
  await b.waitFor(() => hub.clientCount === 1, 2000, 'the closed client removed');
  assert.equal(live.app.netclamp.events.subscriberCount, 1, 'its bus subscription is gone too');
  await live.close();
  await b.waitFor((c) => c.ended(), 2000, 'stream ended by shutdown');
  assert.equal(hub.clientCount, 0);
});

test('rule_sync_error is sent when the engine rejects a rule', async (t) => {
  const live = await startLive(t);
  const client = await live.connect();
  live.engine.applyFailure = { code: 'EPERM', message: 'operation not permitted' };
  const created = await live.request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'rejected' }) });
  assert.equal(created.statusCode, 201, created.body);
  const rule = created.json() as { id: string; sync_state: string };
  assert.equal(rule.sync_state, 'ERROR');
  await client.waitFor((c) => c.events.some((e) => e.event === 'rule_sync_error'), 3000, 'rule_sync_error');
  const event = client.events.find((e) => e.event === 'rule_sync_error')!;
  assert.deepEqual(event.data, { rule_id: rule.id, name: 'rejected', sync_state: 'ERROR', error: 'EPERM: operation not permitted' });

  // A rule that syncs fine sends nothing.
  live.engine.applyFailure = null;
  const fine = await live.request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'fine' }) });
  assert.equal((fine.json() as { sync_state: string }).sync_state, 'SYNCED');
  live.app.netclamp.events.emit('license_changed', { used: 0, cap: 3 }); // a marker: everything before it has arrived
  await client.waitFor((c) => c.events.some((e) => e.event === 'license_changed'), 3000, 'marker');
  assert.equal(client.events.filter((e) => e.event === 'rule_sync_error').length, 1);
});

test('event bus: every contract event name, a bounded ring, ids beyond an earlier run', async () => {
  assert.deepEqual([...EVENT_NAMES].sort(), [
    'config_error', 'config_reloaded', 'engine_down', 'engine_recovered', 'group_error', 'group_updated',
    'license_changed', 'quota_exceeded', 'quota_reset', 'rule_sync_error',
  ]);
  const earlier = new EventBus();
  let last = earlier.emit('license_changed', { used: 1, cap: 3 });
  for (let i = 0; i < 5; i++) last = earlier.emit('license_changed', { used: 1, cap: 3 });
  await sleep(20); // a restart takes far longer than this
  const bus = new EventBus({ capacity: 2 });
  assert.ok(bus.upcomingId > last.id, 'a new run starts above an earlier run');
  const ids = [1, 2, 3].map(() => bus.emit('license_changed', { used: 1, cap: 3 }).id);
  assert.deepEqual(bus.since(ids[0]!).events.map((e) => e.id), ids.slice(1));
  assert.equal(bus.since(ids[0]!).incomplete, false);
  assert.equal(bus.since(ids[0]! - 1).incomplete, true, 'the first event was evicted');
  assert.equal(bus.since(last.id).incomplete, true, 'an id from an earlier run');
  assert.equal(bus.since(ids[2]! + 5).incomplete, true, 'an id from the future');
  bus.resize(1);
  assert.deepEqual(bus.since(0).events.map((e) => e.id), [ids[2]]);
  let seen = 0;
  const unsubscribe = bus.subscribe(() => { seen++; });
  bus.subscribe(() => { throw new Error('a broken listener'); });
  bus.emit('license_changed', { used: 2, cap: 3 });
  unsubscribe();
  bus.emit('license_changed', { used: 3, cap: 3 });
  assert.equal(seen, 1);
});
