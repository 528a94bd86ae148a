import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startTestApp } from '../helpers/app.js';
import type { ConnectionEntry } from '../../lib/engine/engine.js';

const selfPath = process.platform === 'linux' ? fs.readlinkSync('/proc/self/exe') : process.execPath;

function socket(overrides: Partial<ConnectionEntry>): ConnectionEntry {
  return {
    protocol: 'TCP', localAddress: '127.0.0.1', localPort: 40000, remoteAddress: '127.0.0.1', remotePort: 80,
    state: 'ESTABLISHED', pid: process.pid, appPath: selfPath, ...overrides,
  };
}

test('GET /connections maps the engine\'s socket table to the contract\'s fields', async (t) => {
  const { request, engine } = await startTestApp(t, { appOptions: { sampleIntervalMs: 0 } });
  engine.connectionTable = [
    socket({}),
    socket({ protocol: 'UDP', localAddress: '::1', localPort: 5353, remoteAddress: '', remotePort: 0, state: '', pid: 0, appPath: '' }),
  ];
  const response = await request({ method: 'GET', url: '/api/v1/connections' });
  assert.equal(response.statusCode, 200);
  assert.deepEqual(response.json(), [
    { protocol: 'TCP', local_address: '127.0.0.1', local_port: 40000, remote_address: '127.0.0.1', remote_port: 80, state: 'ESTABLISHED', pid: process.pid, app_path: selfPath },
    { protocol: 'UDP', local_address: '::1', local_port: 5353, remote_address: '', remote_port: 0, state: '', pid: 0, app_path: '' },
  ]);
  const status = (await request({ method: 'GET', url: '/api/v1/status' })).json() as { active_connections: number; monitored_apps: number };
  assert.equal(status.active_connections, 2);
  assert.equal(status.monitored_apps, 1, 'pid 0 (no owner) is no app');
});


test('GET /connections while the engine is down still answers (the socket table needs no data plane)', async (t) => {
  const { request, engine } = await startTestApp(t, { appOptions: { sampleIntervalMs: 0, engineCheckIntervalMs: 60_000 } });
  engine.connectionTable = [socket({})];
  engine.goDown();
  const response = await request({ method: 'GET', url: '/api/v1/connections' });
  assert.equal(response.statusCode, 200);
  assert.equal((response.json() as unknown[]).length, 1);
  const status = await request({ method: 'GET', url: '/api/v1/status' });
  assert.equal(status.statusCode, 200, '/status answers while the engine is down');
  const body = status.json() as { active_connections: number; wfp_session_state: string };
  assert.equal(body.wfp_session_state, 'DOWN');
  assert.equal(body.active_connections, 1);
});
