/**
 * /quotas with the fake engine: every status code, the draft checks, counting per direction from the
 * engine's per-executable counters, on_exceed through internal rules, one quota_exceeded per period,
 * reset, and persistence across a restart. Samples and flushes are driven by hand (timers off).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { assertProblem, makeDataDir, startTestApp, type TestApp } from '../helpers/app.js';
import { openFakeEngine, type FakeEngine } from '../helpers/fake-engine.js';
import { INTERNAL_RULE_ID_BASE } from '../../lib/engine/engine.js';
import { kernelDevOf } from '../../lib/services/quota-service.js';
import type { BusEvent } from '../../lib/services/event-bus.js';

const MiB = 1024 * 1024;

/** A file standing in for an executable, and its kernel identity. */
function makeApp(t: TestContext, dir: string, name = 'app'): { path: string; identity: { dev: number; ino: number } } {
  const file = path.join(dir, name);
  fs.writeFileSync(file, '#!/bin/sh\n', { mode: 0o755 });
  const stat = fs.statSync(file, { bigint: true });
  t.after(() => fs.rmSync(file, { force: true }));
  return { path: file, identity: { dev: kernelDevOf(stat.dev), ino: Number(stat.ino) } };
}

async function startQuotaApp(t: TestContext, options: { dataDir?: string; engine?: FakeEngine; now?: () => Date } = {}): Promise<TestApp> {
  return startTestApp(t, {
    dataDir: options.dataDir,
    engine: options.engine,
    appOptions: { quotaSampleIntervalMs: 0, quotaFlushIntervalMs: 0, sampleIntervalMs: 0, quotaNow: options.now },
  });
}

function recordEvents(app: TestApp): BusEvent[] {
  const seen: BusEvent[] = [];
  app.app.netclamp.events.subscribe((event) => seen.push(event));
  return seen;
}

function quotaDraft(appPath: string, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return { name: 'Data cap', app_path: appPath, limit_bytes: 10 * MiB, ...overrides };
}

async function createQuota(app: TestApp, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const response = await app.request({ method: 'POST', url: '/api/v1/quotas', payload: body });
  assert.equal(response.statusCode, 201, response.body);
  return response.json() as Record<string, unknown>;
}

async function getQuota(app: TestApp, id: unknown): Promise<Record<string, unknown>> {
  const response = await app.request({ method: 'GET', url: `/api/v1/quotas/${String(id)}` });
  assert.equal(response.statusCode, 200, response.body);
  return response.json() as Record<string, unknown>;
}

test('POST creates a quota: 201, Location, ETag, defaults and the current period', async (t) => {
  const app = await startQuotaApp(t);
  const exe = makeApp(t, app.dataDir);
  const response = await app.request({ method: 'POST', url: '/api/v1/quotas', payload: quotaDraft(exe.path, { period: 'DAILY' }) });
  assert.equal(response.statusCode, 201, response.body);
  const quota = response.json() as Record<string, unknown>;
  assert.equal(response.headers.location, `/api/v1/quotas/${String(quota.id)}`);
  assert.equal(response.headers.etag, '"1"');
  assert.equal(typeof quota.id, 'string');
  assert.deepEqual(
    {
      match_mode: quota.match_mode, direction: quota.direction, on_exceed: quota.on_exceed, enabled: quota.enabled,
      limit_rate_bytes_per_sec: quota.limit_rate_bytes_per_sec, revision: quota.revision, group_id: quota.group_id,
      used_bytes: quota.used_bytes, exceeded: quota.exceeded, exceeded_at: quota.exceeded_at,
    },
    {
      match_mode: 'EXACT_PATH', direction: 'BOTH', on_exceed: 'NOTIFY', enabled: true, limit_rate_bytes_per_sec: null,
      revision: 1, group_id: null, used_bytes: 0, exceeded: false, exceeded_at: null,
    },
  );
  const start = Date.parse(String(quota.period_start));
  const end = Date.parse(String(quota.period_end));
  assert.ok(start <= Date.now() && Date.now() < end, `${String(quota.period_start)} .. ${String(quota.period_end)} holds now`);
  assert.equal(new Date(start).getHours(), 0, 'a day starts at local midnight');

  const never = await createQuota(app, quotaDraft(exe.path, { period: 'NEVER' }));
  assert.equal(never.period_start, null);
  assert.equal(never.period_end, null);

  const list = await app.request({ method: 'GET', url: '/api/v1/quotas' });
  assert.equal(list.statusCode, 200);
  assert.deepEqual((list.json() as Array<{ id: string }>).map((entry) => entry.id), [quota.id, never.id]);
});

test('invalid drafts are 400 naming the field', async (t) => {
  const app = await startQuotaApp(t);
  const exe = makeApp(t, app.dataDir);
  const cases: Array<[Record<string, unknown>, string]> = [
    [quotaDraft(exe.path, { colour: 'blue' }), 'colour'],
    [quotaDraft(exe.path, { limit_bytes: 0 }), 'limit_bytes'],
    [quotaDraft(exe.path, { limit_bytes: 1.5 }), 'limit_bytes'],
    [quotaDraft(exe.path, { period: 'HOURLY' }), 'period'],
    [quotaDraft(exe.path, { direction: 'SIDEWAYS' }), 'direction'],
    [quotaDraft(exe.path, { on_exceed: 'LIMIT' }), 'limit_rate_bytes_per_sec'],
    [quotaDraft(exe.path, { on_exceed: 'BLOCK', limit_rate_bytes_per_sec: 1000 }), 'limit_rate_bytes_per_sec'],
    [quotaDraft(exe.path, { match_mode: 'ANYWHERE' }), 'match_mode'],
    [quotaDraft('relative/app'), 'app_path'],
    [quotaDraft(''), 'app_path'],
    [{ app_path: exe.path, limit_bytes: 1 }, 'name'],
  ];
  for (const [body, field] of cases) {
    const response = await app.request({ method: 'POST', url: '/api/v1/quotas', payload: body });
    const problem = assertProblem(response, 400);
    assert.match(String(problem.detail), new RegExp(field), `${JSON.stringify(body)} -> ${String(problem.detail)}`);
  }
  assert.equal((await app.request({ method: 'GET', url: '/api/v1/quotas' })).json().length, 0);
});

test('401 without a token, 404 for unknown and malformed ids', async (t) => {
  const app = await startQuotaApp(t);
  const exe = makeApp(t, app.dataDir);
  assertProblem(await app.request({ method: 'GET', url: '/api/v1/quotas', headers: { authorization: undefined } }), 401);
  for (const id of ['999', 'abc', '0', String(INTERNAL_RULE_ID_BASE)]) {
    assertProblem(await app.request({ method: 'GET', url: `/api/v1/quotas/${id}` }), 404);
    assertProblem(await app.request({ method: 'PUT', url: `/api/v1/quotas/${id}`, payload: quotaDraft(exe.path) }), 404);
    assertProblem(await app.request({ method: 'DELETE', url: `/api/v1/quotas/${id}` }), 404);
    assertProblem(await app.request({ method: 'POST', url: `/api/v1/quotas/${id}/reset` }), 404);
  }
});

test('PUT replaces with revision/ETag checks like rules; DELETE is 204 then 404', async (t) => {
  const app = await startQuotaApp(t);
  const exe = makeApp(t, app.dataDir);
  const quota = await createQuota(app, quotaDraft(exe.path));
  const url = `/api/v1/quotas/${String(quota.id)}`;

  const updated = await app.request({ method: 'PUT', url, payload: quotaDraft(exe.path, { name: 'Renamed', limit_bytes: 5 * MiB }) });
  assert.equal(updated.statusCode, 200, updated.body);
  assert.equal(updated.headers.etag, '"2"');
  assert.equal((updated.json() as { revision: number }).revision, 2);
  assert.equal((updated.json() as { name: string }).name, 'Renamed');

  assertProblem(await app.request({ method: 'PUT', url, headers: { 'if-match': '"1"' }, payload: quotaDraft(exe.path) }), 409);
  assertProblem(await app.request({ method: 'PUT', url, payload: { ...quotaDraft(exe.path), revision: 1 } }), 409);
  assertProblem(await app.request({ method: 'PUT', url, payload: quotaDraft(exe.path, { extra: 1 }) }), 400);
  const matched = await app.request({ method: 'PUT', url, headers: { 'if-match': '"2"' }, payload: { ...quotaDraft(exe.path), revision: 2 } });
  assert.equal(matched.statusCode, 200, matched.body);
  assert.equal((matched.json() as { revision: number }).revision, 3);
  const read = await app.request({ method: 'GET', url });
  assert.equal(read.headers.etag, '"3"');

  const deleted = await app.request({ method: 'DELETE', url });
  assert.equal(deleted.statusCode, 204);
  assert.equal(deleted.body, '');
  assertProblem(await app.request({ method: 'GET', url }), 404);
  assertProblem(await app.request({ method: 'DELETE', url }), 404);
});

test('counting follows the executable and the direction', async (t) => {
  const app = await startQuotaApp(t);
  const exe = makeApp(t, app.dataDir, 'counted');
  const other = makeApp(t, app.dataDir, 'other');
  // Traffic before the quotas existed is not theirs.
  app.engine.addAppTraffic(exe.identity, { up: 7777, down: 7777 });
  await app.app.netclamp.quotas.sample();
  const both = await createQuota(app, quotaDraft(exe.path, { direction: 'BOTH' }));
  const inbound = await createQuota(app, quotaDraft(exe.path, { direction: 'INBOUND' }));
  const outbound = await createQuota(app, quotaDraft(exe.path, { direction: 'OUTBOUND' }));
  const disabled = await createQuota(app, quotaDraft(exe.path, { enabled: false }));

  app.engine.addAppTraffic(exe.identity, { up: 1000, down: 5000 });
  app.engine.addAppTraffic(other.identity, { up: 1 * MiB, down: 1 * MiB });
  await app.app.netclamp.quotas.sample();
  app.engine.addAppTraffic(exe.identity, { up: 24, down: 0 });
  await app.app.netclamp.quotas.sample();

  assert.equal((await getQuota(app, both.id)).used_bytes, 6024);
  assert.equal((await getQuota(app, inbound.id)).used_bytes, 5000);
  assert.equal((await getQuota(app, outbound.id)).used_bytes, 1024);
  assert.equal((await getQuota(app, disabled.id)).used_bytes, 0);

  // An engine re-open restarts the kernel's counters; the quota keeps what it had and counts on.
  app.engine.goDown();
  await app.app.netclamp.quotas.sample();
  await app.engine.open();
  app.engine.addAppTraffic(exe.identity, { up: 0, down: 100 });
  await app.app.netclamp.quotas.sample();
  assert.equal((await getQuota(app, inbound.id)).used_bytes, 5100);
});

test('FILENAME and DIRECTORY quotas count every executable the engine learned for the pattern', async (t) => {
  const app = await startQuotaApp(t);
  const folder = path.join(app.dataDir, 'tools');
  fs.mkdirSync(folder);
  const inFolder = makeApp(t, folder, 'fetcher');
  const sameName = makeApp(t, app.dataDir, 'fetcher');
  const unrelated = makeApp(t, app.dataDir, 'other');
  for (const exe of [inFolder, sameName, unrelated]) app.engine.execApp(exe.identity, exe.path);
  const byName = await createQuota(app, quotaDraft(path.join('/nowhere', 'fetcher'), { match_mode: 'FILENAME' }));
  const byFolder = await createQuota(app, quotaDraft(folder, { match_mode: 'DIRECTORY', direction: 'INBOUND' }));
  assert.deepEqual(app.engine.watches.map((watch) => watch.matchMode).sort(), ['DIRECTORY', 'FILENAME']);

  app.engine.addAppTraffic(inFolder.identity, { up: 10, down: 1000 });
  app.engine.addAppTraffic(sameName.identity, { up: 20, down: 2000 });
  app.engine.addAppTraffic(unrelated.identity, { up: 40, down: 4000 });
  await app.app.netclamp.quotas.sample();
  assert.equal((await getQuota(app, byName.id)).used_bytes, 3030, 'both files named fetcher, both directions');
  assert.equal((await getQuota(app, byFolder.id)).used_bytes, 1000, 'only the one under the folder, received bytes');

  // A copy started later (a new identity) is counted from the sample that learns it.
  const later = makeApp(t, folder, 'fetcher-2');
  app.engine.execApp(later.identity, later.path);
  app.engine.addAppTraffic(later.identity, { down: 500 });
  await app.app.netclamp.quotas.sample();
  assert.equal((await getQuota(app, byFolder.id)).used_bytes, 1500);
  assert.equal((await getQuota(app, byName.id)).used_bytes, 3030);

  // A disabled pattern quota is no longer watched.
  const draft = quotaDraft(folder, { match_mode: 'DIRECTORY', direction: 'INBOUND', enabled: false });
  assert.equal((await app.request({ method: 'PUT', url: `/api/v1/quotas/${byFolder.id}`, payload: draft })).statusCode, 200);
  assert.deepEqual(app.engine.watches.map((watch) => watch.matchMode), ['FILENAME']);
});

test('BLOCK: an internal rule within one sample, one quota_exceeded per period, invisible to /rules; reset lifts it', async (t) => {
  const app = await startQuotaApp(t);
  const events = recordEvents(app);
  const exe = makeApp(t, app.dataDir);
  const quota = await createQuota(app, quotaDraft(exe.path, { limit_bytes: 1 * MiB, on_exceed: 'BLOCK', period: 'DAILY' }));
  const internalId = INTERNAL_RULE_ID_BASE + Number(quota.id);

  app.engine.addAppTraffic(exe.identity, { down: 1 * MiB - 1 });
  await app.app.netclamp.quotas.sample();
  assert.equal(app.engine.installed.has(internalId), false, 'one byte under the limit: no action');
  assert.equal((await getQuota(app, quota.id)).exceeded, false);

  app.engine.addAppTraffic(exe.identity, { down: 1 });
  await app.app.netclamp.quotas.sample();
  const installed = app.engine.installed.get(internalId);
  assert.ok(installed, 'the BLOCK rule is installed');
  assert.equal(installed.rule.action, 'BLOCK');
  assert.equal(installed.rule.appPath, exe.path);
  const exceeded = await getQuota(app, quota.id);
  assert.equal(exceeded.exceeded, true);
  assert.equal(exceeded.used_bytes, 1 * MiB);
  assert.equal(typeof exceeded.exceeded_at, 'string');

  // More traffic, more samples, a reconcile: still one event, the rule stays, /rules does not show it.
  app.engine.addAppTraffic(exe.identity, { up: 4096 });
  await app.app.netclamp.quotas.sample();
  await app.app.netclamp.quotas.sample();
  const reconcile = await app.request({ method: 'POST', url: '/api/v1/rules/reconcile' });
  assert.equal(reconcile.statusCode, 200, reconcile.body);
  assert.equal((reconcile.json() as { removed: number }).removed, 0);
  assert.ok(app.engine.installed.has(internalId), 'reconcile leaves the quota action alone');
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/rules' })).json(), []);
  const exceededEvents = events.filter((event) => event.name === 'quota_exceeded');
  assert.equal(exceededEvents.length, 1);
  assert.deepEqual(exceededEvents[0]!.data, {
    quota_id: quota.id, name: 'Data cap', used_bytes: 1 * MiB, limit_bytes: 1 * MiB, on_exceed: 'BLOCK', period_end: quota.period_end,
  });

  // The engine lost its rules (re-open): the next sample puts the action back.
  app.engine.dropInstalled(internalId);
  await app.app.netclamp.quotas.sample();
  assert.ok(app.engine.installed.has(internalId));

  const reset = await app.request({ method: 'POST', url: `/api/v1/quotas/${String(quota.id)}/reset` });
  assert.equal(reset.statusCode, 200, reset.body);
  const body = reset.json() as Record<string, unknown>;
  assert.equal(body.used_bytes, 0);
  assert.equal(body.exceeded, false);
  assert.equal(body.exceeded_at, null);
  assert.equal(app.engine.installed.has(internalId), false, 'reset lifts the block');
  assert.deepEqual(events.filter((event) => event.name === 'quota_reset').map((event) => event.data), [
    { quota_id: quota.id, name: 'Data cap', reason: 'api' },
  ]);

  // After a reset the quota counts again from zero and can be exceeded again.
  app.engine.addAppTraffic(exe.identity, { down: 1 * MiB });
  await app.app.netclamp.quotas.sample();
  assert.ok(app.engine.installed.has(internalId));
  assert.equal(events.filter((event) => event.name === 'quota_exceeded').length, 2);

  // Deleting the quota removes its action.
  assert.equal((await app.request({ method: 'DELETE', url: `/api/v1/quotas/${String(quota.id)}` })).statusCode, 204);
  assert.equal(app.engine.installed.has(internalId), false);
});

test('LIMIT installs a rate limit in the quota direction; NOTIFY only sends the event', async (t) => {
  const app = await startQuotaApp(t);
  const events = recordEvents(app);
  const exe = makeApp(t, app.dataDir);
  const limited = await createQuota(app, quotaDraft(exe.path, {
    limit_bytes: 1000, direction: 'INBOUND', on_exceed: 'LIMIT', limit_rate_bytes_per_sec: 50_000,
  }));
  const notify = await createQuota(app, quotaDraft(exe.path, { limit_bytes: 1000, on_exceed: 'NOTIFY' }));
  app.engine.addAppTraffic(exe.identity, { down: 2000 });
  await app.app.netclamp.quotas.sample();
  const rule = app.engine.installed.get(INTERNAL_RULE_ID_BASE + Number(limited.id))?.rule;
  assert.ok(rule);
  assert.equal(rule.action, 'LIMIT');
  assert.equal(rule.direction, 'INBOUND');
  assert.equal(rule.rateDownBytesPerSec, 50_000);
  assert.equal(rule.rateUpBytesPerSec, null);
  assert.equal(app.engine.installed.has(INTERNAL_RULE_ID_BASE + Number(notify.id)), false);
  assert.deepEqual(events.filter((event) => event.name === 'quota_exceeded').map((event) => (event.data as { quota_id: string }).quota_id).sort(),
    [limited.id, notify.id].sort());

  // Raising the limit above the count lifts the action; disabling an exceeded quota lifts it too.
  const raised = await app.request({ method: 'PUT', url: `/api/v1/quotas/${String(limited.id)}`, payload: quotaDraft(exe.path, {
    limit_bytes: 10_000, direction: 'INBOUND', on_exceed: 'LIMIT', limit_rate_bytes_per_sec: 50_000,
  }) });
  assert.equal(raised.statusCode, 200, raised.body);
  assert.equal((raised.json() as { exceeded: boolean }).exceeded, false);
  assert.equal((raised.json() as { used_bytes: number }).used_bytes, 2000, 'a PUT keeps the count');
  assert.equal(app.engine.installed.size, 0);
});

test('counts persist across a restart: flushed periodically and on shutdown', async (t) => {
  const dataDir = makeDataDir(t);
  const first = await startQuotaApp(t, { dataDir });
  const exe = makeApp(t, dataDir);
  const quota = await createQuota(first, quotaDraft(exe.path, { on_exceed: 'BLOCK', limit_bytes: 3000 }));
  first.engine.addAppTraffic(exe.identity, { up: 1000 });
  await first.app.netclamp.quotas.sample();
  await first.app.netclamp.quotas.flush();
  first.engine.addAppTraffic(exe.identity, { up: 500 });
  await first.app.netclamp.quotas.sample();
  await first.close(); // the shutdown flush writes the last 500

  const second = await startQuotaApp(t, { dataDir });
  assert.equal((await getQuota(second, quota.id)).used_bytes, 1500);
  second.engine.addAppTraffic(exe.identity, { up: 1500 });
  await second.app.netclamp.quotas.sample();
  assert.equal((await getQuota(second, quota.id)).exceeded, true);
  await second.close();

  // An exceeded quota's action is installed again at start (a fresh engine has no rules).
  const engine = await openFakeEngine();
  const third = await startQuotaApp(t, { dataDir, engine });
  assert.equal((await getQuota(third, quota.id)).used_bytes, 3000);
  assert.ok(engine.installed.has(INTERNAL_RULE_ID_BASE + Number(quota.id)));
});

test('a period that ended while the service was off rolls over at start', async (t) => {
  const dataDir = makeDataDir(t);
  let clock = new Date(2026, 2, 10, 23, 0, 0); // local time
  const first = await startQuotaApp(t, { dataDir, now: () => clock });
  const exe = makeApp(t, dataDir);
  const daily = await createQuota(first, quotaDraft(exe.path, { period: 'DAILY', limit_bytes: 100, on_exceed: 'BLOCK' }));
  const monthly = await createQuota(first, quotaDraft(exe.path, { period: 'MONTHLY', limit_bytes: 100 }));
  first.engine.addAppTraffic(exe.identity, { down: 150 });
  await first.app.netclamp.quotas.sample();
  assert.equal((await getQuota(first, daily.id)).exceeded, true);
  await first.close();

  clock = new Date(2026, 2, 11, 0, 30, 0);
  const engine = await openFakeEngine();
  const second = await startQuotaApp(t, { dataDir, engine, now: () => clock });
  const rolled = await getQuota(second, daily.id);
  assert.equal(rolled.used_bytes, 0);
  assert.equal(rolled.exceeded, false);
  assert.equal(rolled.period_start, new Date(2026, 2, 11).toISOString());
  assert.equal(rolled.period_end, new Date(2026, 2, 12).toISOString());
  assert.equal(engine.installed.size, 0, 'a new period starts without the block');
  const same = await getQuota(second, monthly.id);
  assert.equal(same.used_bytes, 150, 'the month has not ended');
  assert.equal(same.period_start, new Date(2026, 2, 1).toISOString());

  // Rollover while running, at the next sample.
  clock = new Date(2026, 3, 1, 0, 0, 1);
  await second.app.netclamp.quotas.sample();
  assert.equal((await getQuota(second, monthly.id)).used_bytes, 0);
  assert.equal((await getQuota(second, monthly.id)).period_start, new Date(2026, 3, 1).toISOString());
});

test('the periodic flush writes counts to SQLite without a shutdown (a crash loses only seconds)', async (t) => {
  const dataDir = makeDataDir(t);
  const app = await startTestApp(t, { dataDir, appOptions: { quotaSampleIntervalMs: 0, quotaFlushIntervalMs: 50, sampleIntervalMs: 0 } });
  const exe = makeApp(t, dataDir);
  const quota = await createQuota(app, quotaDraft(exe.path));
  app.engine.addAppTraffic(exe.identity, { down: 123_456 });
  await app.app.netclamp.quotas.sample();
  const { default: Database } = await import('better-sqlite3');
  const readStored = (): number => {
    const db = new Database(path.join(dataDir, 'netclamp.db'), { readonly: true });
    try {
      return (db.prepare('SELECT used_bytes FROM quotas WHERE id = ?').get(Number(quota.id)) as { used_bytes: number }).used_bytes;
    } finally {
      db.close();
    }
  };
  const deadline = Date.now() + 3000;
  while (readStored() !== 123_456 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(readStored(), 123_456);
});

test('a group uninstall removes its quotas and their actions; group quotas are read-only through /quotas', async (t) => {
  const app = await startQuotaApp(t);
  const exe = makeApp(t, app.dataDir);
  const quotas = app.app.netclamp.quotas;
  const owned = await quotas.create({
    name: 'group cap', app_path: exe.path, match_mode: 'EXACT_PATH', direction: 'BOTH', limit_bytes: 10,
    period: 'NEVER', on_exceed: 'BLOCK', limit_rate_bytes_per_sec: null, enabled: true,
  }, 'family');
  assert.equal(owned.group_id, 'family');
  const url = `/api/v1/quotas/${owned.id}`;
  assertProblem(await app.request({ method: 'PUT', url, payload: quotaDraft(exe.path) }), 409);
  assertProblem(await app.request({ method: 'DELETE', url }), 409);
  app.engine.addAppTraffic(exe.identity, { up: 100 });
  await quotas.sample();
  assert.ok(app.engine.installed.has(INTERNAL_RULE_ID_BASE + Number(owned.id)));
  assert.equal(await quotas.removeGroup('family'), 1);
  assert.equal(app.engine.installed.size, 0);
  assertProblem(await app.request({ method: 'GET', url }), 404);
});
