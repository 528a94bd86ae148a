import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import { startTestApp, draft } from '../helpers/app.js';
import type { ConnectionEntry } from '../../lib/engine/engine.js';

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);
// This test process stands in for a process using the network: it is alive and has a readable exe.
const selfPath = process.platform === 'linux' ? fs.readlinkSync('/proc/self/exe') : process.execPath;

function socket(overrides: Partial<ConnectionEntry>): ConnectionEntry {
  return {
    protocol: 'TCP', localAddress: '127.0.0.1', localPort: 40000, remoteAddress: '127.0.0.1', remotePort: 80,
    state: 'ESTABLISHED', pid: process.pid, appPath: selfPath, ...overrides,
  };
}

test('GET /apps: cumulative bytes, rate over the last second, connection count, governing rule', async (t) => {
  let now = T0;
  const { request, engine, app } = await startTestApp(t, { appOptions: { sampleIntervalMs: 0, now: () => now } });
  const activity = app.netclamp.activity;
  engine.connectionTable = [socket({}), socket({ localPort: 40001 }), socket({ pid: 999_999_999 })];
  // Two rules for this executable: the higher priority governs; on a tie BLOCK beats ALLOW.
  const low = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: selfPath, action: 'ALLOW', priority: 10 }) });
  const high = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: selfPath, action: 'BLOCK', priority: 50 }) });
  const tieAllow = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: selfPath, action: 'ALLOW', priority: 50 }) });
  const other = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: '/usr/bin/env', action: 'BLOCK', priority: 9999 }) });
  for (const response of [low, high, tieAllow, other]) assert.equal(response.statusCode, 201, response.body);

  engine.activity.set(process.pid, { pid: process.pid, bytesUp: 1000, bytesDown: 5000, blocked: 0 });
  engine.activity.set(999_999_998, { pid: 999_999_998, bytesUp: 1, bytesDown: 1, blocked: 0 }); // exited
  await activity.sample();
  now += 1000;
  engine.activity.set(process.pid, { pid: process.pid, bytesUp: 1500, bytesDown: 9000, blocked: 0 });
  await activity.sample();

  const apps = (await request({ method: 'GET', url: '/api/v1/apps' })).json() as Array<Record<string, unknown>>;
  assert.equal(apps.length, 1, 'only running processes: ' + JSON.stringify(apps));
  assert.deepEqual(apps[0], {
    pid: process.pid,
    name: apps[0]!.name,
    path: selfPath,
    bytes_up: 1500,
    bytes_down: 9000,
    rate_up: 500,
    rate_down: 4000,
    connections: 2,
    rule_id: (high.json() as { id: string }).id,
    blocked: true,
  });
  assert.ok(typeof apps[0]!.name === 'string' && apps[0]!.name !== '');

  // Disabling the BLOCK leaves the ALLOW at the same priority in charge.
  const highId = (high.json() as { id: string }).id;
  const current = (await request({ method: 'GET', url: `/api/v1/rules/${highId}` })).json() as Record<string, unknown>;
  const disabled = await request({
    method: 'PUT', url: `/api/v1/rules/${highId}`,
    payload: draft({ app_path: selfPath, action: 'BLOCK', priority: 50, enabled: false, revision: current.revision }),
  });
  assert.equal(disabled.statusCode, 200, disabled.body);
  const after = (await request({ method: 'GET', url: '/api/v1/apps' })).json() as Array<{ rule_id: string | null; blocked: boolean }>;
  assert.equal(after[0]!.rule_id, (tieAllow.json() as { id: string }).id);
  assert.equal(after[0]!.blocked, false);

  // Quotas of this executable (by path and by file name) are listed; another app's quota is not.
  const quotaIds: string[] = [];
  for (const [appPath, matchMode] of [[selfPath, 'EXACT_PATH'], [`/elsewhere/${path.basename(selfPath)}`, 'FILENAME'], ['/usr/bin/true', 'EXACT_PATH']]) {
    const created = await request({ method: 'POST', url: '/api/v1/quotas', payload: { name: 'cap', app_path: appPath, match_mode: matchMode, limit_bytes: 1000 } });
    assert.equal(created.statusCode, 201, created.body);
    quotaIds.push((created.json() as { id: string }).id);
  }

  const detail = await request({ method: 'GET', url: `/api/v1/apps/${process.pid}` });
  assert.equal(detail.statusCode, 200);
  const body = detail.json() as { connections: number; connection_list: Array<{ local_port: number }>; rules: Array<{ id: string }>; quotas: Array<{ id: string }> };
  assert.equal(body.connections, 2);
  assert.deepEqual(body.connection_list.map((c) => c.local_port), [40000, 40001]);
  assert.deepEqual(body.rules.map((r) => r.id).sort(), [low, high, tieAllow].map((r) => (r.json() as { id: string }).id).sort(),
    'every rule for this executable, the disabled one included; not the other app\'s');
  assert.deepEqual(body.quotas.map((q) => q.id).sort(), quotaIds.slice(0, 2).sort());
});

test('GET /apps/{pid}: 404 for a pid that is unknown, exited, or not a pid', async (t) => {
  const { request, engine } = await startTestApp(t, { appOptions: { sampleIntervalMs: 0 } });
  engine.connectionTable = [socket({ pid: 999_999_999 })];
  for (const pid of ['999999999', '1234567890', 'abc', '0']) {
    const response = await request({ method: 'GET', url: `/api/v1/apps/${pid}` });
    assert.equal(response.statusCode, 404, pid);
  }
});
