import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { draft, makeDataDir, startTestApp } from '../helpers/app.js';
import { FakeEngine, openFakeEngine } from '../helpers/fake-engine.js';

const pkg = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };

test('GET /status reports the engine, the rules and the service', async (t) => {
  const before = Date.now();
  const { request, engine } = await startTestApp(t);
  await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: '/bin/sh' }) });
  await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: '/bin/sh', enabled: false }) });
  await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: '/nonexistent/x' }) });
  engine.addTraffic(1, { blocked: 7 });
  const response = await request({ method: 'GET', url: '/api/v1/status' });
  assert.equal(response.statusCode, 200);
  const status = response.json();
  assert.equal(status.version, pkg.version);
  assert.equal(status.platform, process.platform);
  assert.equal(status.wfp_active, true);
  assert.equal(status.kdrv_active, true);
  assert.equal(status.wfp_session_state, 'OPEN');
  assert.equal(status.active_rules, 1, 'enabled and synced only');
  assert.equal(status.monitored_apps, 0, 'processes in /apps: the fake engine reports none (see test/routes/apps.test.ts)');
  assert.equal(status.active_connections, 0);
  assert.equal(status.total_blocked, 7);
  assert.deepEqual(status.competing_shapers, []);
  assert.equal(status.bfe_restarts, 0);
  assert.match(status.uptime_since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  assert.ok(Date.parse(status.uptime_since) >= before - 1000);
});

test('GET /status without an engine says UNAVAILABLE and keeps working', async (t) => {
  const engine = new FakeEngine();
  engine.state = 'UNAVAILABLE';
  const { request } = await startTestApp(t, { engine });
  const response = await request({ method: 'GET', url: '/api/v1/status' });
  assert.equal(response.statusCode, 200);
  const status = response.json();
  assert.equal(status.wfp_active, false);
  assert.equal(status.kdrv_active, false);
  assert.equal(status.wfp_session_state, 'UNAVAILABLE');
});

test('total_blocked survives a restart and an engine re-open', async (t) => {
  const dataDir = makeDataDir(t);
  const first = await startTestApp(t, { dataDir });
  first.engine.addTraffic(1, { blocked: 5 });
  assert.equal((await first.request({ method: 'GET', url: '/api/v1/status' })).json().total_blocked, 5);
  await first.close();

  const engine = await openFakeEngine(); // a fresh engine counts from zero again
  const second = await startTestApp(t, { dataDir, engine });
  assert.equal((await second.request({ method: 'GET', url: '/api/v1/status' })).json().total_blocked, 5);
  engine.addTraffic(2, { blocked: 3 });
  assert.equal((await second.request({ method: 'GET', url: '/api/v1/status' })).json().total_blocked, 8);
  // The engine re-opens under the service (its counter restarts): nothing already counted is lost.
  engine.totalBlocked = 1;
  assert.equal((await second.request({ method: 'GET', url: '/api/v1/status' })).json().total_blocked, 9);
});

test('total_blocked is flushed periodically, so a crash loses only seconds', async (t) => {
  const dataDir = makeDataDir(t);
  const { engine } = await startTestApp(t, { dataDir, counterFlushIntervalMs: 50 });
  engine.addTraffic(1, { blocked: 11 });
  await new Promise((resolve) => setTimeout(resolve, 300));
  // Read the database behind the running service's back, as a restart after a crash would.
  const db = new Database(path.join(dataDir, 'netclamp.db'), { readonly: true });
  try {
    const row = db.prepare("SELECT value FROM meta WHERE key = 'total_blocked'").get() as { value: string } | undefined;
    assert.equal(row?.value, '11');
  } finally {
    db.close();
  }
});
