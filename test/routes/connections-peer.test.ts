/** /connections: a socket without a peer has remote_address "", TCP listeners like unconnected UDP. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestApp } from '../helpers/app.js';
import type { ConnectionEntry } from '../../lib/engine/engine.js';

function socket(overrides: Partial<ConnectionEntry>): ConnectionEntry {
  return {
    protocol: 'TCP', localAddress: '0.0.0.0', localPort: 8080, remoteAddress: '0.0.0.0', remotePort: 0,
    state: 'LISTEN', pid: 0, appPath: '', ...overrides,
  };
}

test('GET /connections: TCP listeners (IPv4 and IPv6) have remote_address "" like unconnected UDP', async (t) => {
  const { request, engine } = await startTestApp(t, { appOptions: { sampleIntervalMs: 0 } });
  engine.connectionTable = [
    socket({}),
    socket({ localAddress: '::', remoteAddress: '::' }),
    socket({ protocol: 'UDP', state: '', remoteAddress: '' }),
    // A peer at the unspecified address with a port is a peer; keep it as the kernel reports it.
    socket({ state: 'SYN_SENT', localAddress: '10.0.0.2', localPort: 40000, remoteAddress: '0.0.0.0', remotePort: 80 }),
  ];
  const list = (await request({ method: 'GET', url: '/api/v1/connections' })).json() as Array<{ remote_address: string; remote_port: number }>;
  assert.deepEqual(list.map((c) => [c.remote_address, c.remote_port]), [['', 0], ['', 0], ['', 0], ['0.0.0.0', 80]]);
});
