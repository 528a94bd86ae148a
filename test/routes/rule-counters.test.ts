/**
 * Rule counters (bytes_up, bytes_down, blocked_count) since the rule was last changed, across what restarts
 * the kernel's counters: a service restart, an engine re-open, the engine dropping a rule whose file
 * vanished. Persisted every flush and at shutdown; a PUT zeroes them; a DELETE drops them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { draft, makeDataDir, startTestApp, type TestApp } from '../helpers/app.js';
import { openFakeEngine } from '../helpers/fake-engine.js';
import type { BusEvent } from '../../lib/services/event-bus.js';

/** No timers the test does not drive, except where a test turns one on. */
const QUIET = { sampleIntervalMs: 0, quotaSampleIntervalMs: 0, quotaFlushIntervalMs: 0 };
/** Long enough never to fire during a test: flushes happen at shutdown only. */
const NO_PERIODIC_FLUSH = 3_600_000;

type Counters = [number, number, number];

async function countersOf(app: TestApp, id: string): Promise<Counters> {
  const response = await app.request({ method: 'GET', url: `/api/v1/rules/${id}` });
  assert.equal(response.statusCode, 200, response.body);
  const rule = response.json() as Record<string, number>;
  return [rule.bytes_up!, rule.bytes_down!, rule.blocked_count!];
}

async function createRule(app: TestApp, overrides: Record<string, unknown> = {}): Promise<string> {
  const response = await app.request({ method: 'POST', url: '/api/v1/rules', payload: draft(overrides) });
  assert.equal(response.statusCode, 201, response.body);
  return (response.json() as { id: string }).id;
}

/** What the database holds for a rule, read behind the service's back (as a start after a crash would). */
function storedCounters(dataDir: string, id: string): Counters | null {
  const db = new Database(path.join(dataDir, 'netclamp.db'), { readonly: true });
  try {
    const row = db.prepare('SELECT bytes_up, bytes_down, blocked_count FROM rule_counters WHERE rule_id = ?').get(Number(id)) as
      { bytes_up: number; bytes_down: number; blocked_count: number } | undefined;
    return row === undefined ? null : [row.bytes_up, row.bytes_down, row.blocked_count];
  } finally {
    db.close();
  }
}

async function until<T>(probe: () => T | Promise<T>, done: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const value = await probe();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('counters survive a restart (saved at shutdown) with the same revision, and keep counting on top', async (t) => {
  const dataDir = makeDataDir(t);
  const first = await startTestApp(t, { dataDir, counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  const id = await createRule(first);
  const other = await createRule(first, { name: 'never matched' });
  first.engine.addTraffic(Number(id), { up: 100, down: 250, blocked: 1 });
  // No read in between: the shutdown itself reads the kernel before it saves.
  await first.close();

  const engine = await openFakeEngine(); // a new engine counts from zero
  const second = await startTestApp(t, { dataDir, engine, counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  assert.deepEqual(await countersOf(second, id), [100, 250, 1]);
  assert.deepEqual(await countersOf(second, other), [0, 0, 0]);
  const rule = (await second.request({ method: 'GET', url: `/api/v1/rules/${id}` })).json() as { revision: number };
  assert.equal(rule.revision, 1, 'a restart is not a change of the rule');
  engine.addTraffic(Number(id), { up: 1, down: 2, blocked: 3 });
  assert.deepEqual(await countersOf(second, id), [101, 252, 4]);
  const listed = (await second.request({ method: 'GET', url: '/api/v1/rules' })).json() as Array<Record<string, unknown>>;
  assert.deepEqual(listed.map((entry) => [entry.id, entry.blocked_count]), [[id, 4], [other, 0]]);

  // A second restart neither loses nor doubles what the first one carried over.
  await second.close();
  const third = await startTestApp(t, { dataDir, engine: await openFakeEngine(), counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  assert.deepEqual(await countersOf(third, id), [101, 252, 4]);
});

test('counters survive an engine re-open: the last reading before the loss is kept, nothing counted twice', async (t) => {
  const app = await startTestApp(t, {
    counterFlushIntervalMs: NO_PERIODIC_FLUSH,
    appOptions: { ...QUIET, engineCheckIntervalMs: 10, engineBackoffMs: [20] },
  });
  const seen: BusEvent[] = [];
  app.app.netclamp.events.subscribe((event: BusEvent) => seen.push(event));
  const id = await createRule(app);
  app.engine.addTraffic(Number(id), { up: 10, down: 20, blocked: 2 });
  assert.deepEqual(await countersOf(app, id), [10, 20, 2]); // the reading the loss will keep

  app.engine.goDown();
  await until(() => seen.some((event) => event.name === 'engine_down'), Boolean, 'engine_down');
  assert.deepEqual(await countersOf(app, id), [10, 20, 2], 'while the engine is down the last reading stands');
  await until(() => seen.some((event) => event.name === 'engine_recovered'), Boolean, 'engine_recovered');
  assert.equal(app.engine.installed.get(Number(id))?.rule.resetCounters, true, 're-applied to a fresh engine');
  // The new engine life outgrows the old one before anyone reads: the re-apply itself kept the old life.
  app.engine.addTraffic(Number(id), { up: 100, down: 100, blocked: 5 });
  assert.deepEqual(await countersOf(app, id), [110, 120, 7]);
  app.engine.addTraffic(Number(id), { up: 1 });
  assert.deepEqual(await countersOf(app, id), [111, 120, 7]);

  // Saved at shutdown as the sum of both engine lives.
  await app.close();
  assert.deepEqual(storedCounters(app.dataDir, id), [111, 120, 7]);
});

test('a PUT zeroes the counters, also those carried over a restart, and they stay zero after the next one', async (t) => {
  const dataDir = makeDataDir(t);
  const first = await startTestApp(t, { dataDir, counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  const id = await createRule(first);
  first.engine.addTraffic(Number(id), { up: 5, down: 6, blocked: 7 });
  await first.close();

  const second = await startTestApp(t, { dataDir, engine: await openFakeEngine(), counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  second.engine.addTraffic(Number(id), { blocked: 1 });
  assert.deepEqual(await countersOf(second, id), [5, 6, 8]);
  const put = await second.request({ method: 'PUT', url: `/api/v1/rules/${id}`, payload: draft({ name: 'changed' }) });
  assert.equal(put.statusCode, 200, put.body);
  const changed = put.json() as Record<string, number>;
  assert.deepEqual([changed.bytes_up, changed.bytes_down, changed.blocked_count], [0, 0, 0]);
  assert.deepEqual(await countersOf(second, id), [0, 0, 0]);
  assert.equal(storedCounters(dataDir, id), null, 'the saved counters went with the change, in the same transaction');
  second.engine.addTraffic(Number(id), { blocked: 2 });
  assert.deepEqual(await countersOf(second, id), [0, 0, 2]);
  await second.close();

  const third = await startTestApp(t, { dataDir, engine: await openFakeEngine(), counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  assert.deepEqual(await countersOf(third, id), [0, 0, 2]);
});

test('a PUT the engine could not take (it died during the write) keeps the counters', async (t) => {
  const dataDir = makeDataDir(t);
  const first = await startTestApp(t, { dataDir, counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  const id = await createRule(first);
  first.engine.addTraffic(Number(id), { blocked: 4 });
  await first.close();

  const second = await startTestApp(t, { dataDir, engine: await openFakeEngine(), counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  second.engine.dieDuringApply = true;
  const put = await second.request({ method: 'PUT', url: `/api/v1/rules/${id}`, payload: draft({ name: 'changed' }) });
  assert.equal(put.statusCode, 503, put.body);
  assert.deepEqual(storedCounters(dataDir, id), [0, 0, 4], 'the undo put the saved counters back');
  assert.deepEqual(await countersOf(second, id), [0, 0, 4]);
});

test('DELETE drops the saved counters', async (t) => {
  const dataDir = makeDataDir(t);
  const first = await startTestApp(t, { dataDir, counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  const id = await createRule(first);
  first.engine.addTraffic(Number(id), { blocked: 9 });
  await first.close();
  assert.deepEqual(storedCounters(dataDir, id), [0, 0, 9]);

  const second = await startTestApp(t, { dataDir, engine: await openFakeEngine(), counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  assert.equal((await second.request({ method: 'DELETE', url: `/api/v1/rules/${id}` })).statusCode, 204);
  assert.equal(storedCounters(dataDir, id), null);
  await second.close();
  assert.equal(storedCounters(dataDir, id), null, 'the shutdown flush does not bring them back');
});

test('a crash (no shutdown) loses at most the last flush interval: the periodic flush saved the rest', async (t) => {
  const dataDir = makeDataDir(t);
  const app = await startTestApp(t, { dataDir, counterFlushIntervalMs: 50, appOptions: QUIET });
  const id = await createRule(app);
  app.engine.addTraffic(Number(id), { up: 300, down: 400, blocked: 3 });
  // No API read: only the periodic flush reads the kernel and saves.
  await until(() => storedCounters(dataDir, id), (stored) => stored?.[2] === 3, 'the periodic flush');
  assert.deepEqual(storedCounters(dataDir, id), [300, 400, 3]);

  // The crash image: the data dir as the running service left it, started by a new service.
  const crashDir = makeDataDir(t);
  fs.cpSync(dataDir, crashDir, { recursive: true });
  const restarted = await startTestApp(t, { dataDir: crashDir, engine: await openFakeEngine(), counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  assert.deepEqual(await countersOf(restarted, id), [300, 400, 3]);
});

test('a rule whose file vanished keeps what it counted, and counts on when the file is back', async (t) => {
  const app = await startTestApp(t, { counterFlushIntervalMs: NO_PERIODIC_FLUSH, appOptions: QUIET });
  const appPath = path.join(makeDataDir(t), 'tool');
  fs.writeFileSync(appPath, '#!/bin/sh\n', { mode: 0o755 });
  const id = await createRule(app, { app_path: appPath });
  app.engine.addTraffic(Number(id), { up: 7, blocked: 1 });
  assert.deepEqual(await countersOf(app, id), [7, 0, 1]);
  app.engine.addTraffic(Number(id), { up: 2, blocked: 1 }); // counted, not read by anyone yet

  // The engine drops the rule, and its kernel counters, when the file goes away.
  fs.rmSync(appPath);
  // Watch the fake kernel, not the API: a read would take a fresh reading and hide a missing one.
  await until(() => app.engine.counters.has(Number(id)), (present) => !present, 'the engine to drop the rule');
  const ruleUrl = `/api/v1/rules/${id}`;
  const pending = (await app.request({ method: 'GET', url: ruleUrl })).json() as Record<string, unknown>;
  assert.equal(pending.sync_state, 'PENDING');
  assert.deepEqual(await countersOf(app, id), [9, 0, 2]);

  fs.writeFileSync(appPath, '#!/bin/sh\n', { mode: 0o755 });
  await until(async () => (await app.request({ method: 'GET', url: ruleUrl })).json() as Record<string, unknown>,
    (rule) => rule.sync_state === 'SYNCED', 'SYNCED');
  app.engine.addTraffic(Number(id), { up: 1, blocked: 1 });
  assert.deepEqual(await countersOf(app, id), [10, 0, 3]);
});
