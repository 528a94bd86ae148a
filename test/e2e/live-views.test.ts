/**
 * The live views against the real data plane: /throughput totals agree with a download's size within 2%,
 * a running download shows in /connections (pid, app path) and /apps (bytes, rate), and /status counts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { privilegedSuite } from '../helpers/privileged.js';
import { copyExecutable } from '../net/iperf.js';
import { sleep } from '../net/exec.js';
import { NetClampService, eventually } from './service.js';
import { timedRun } from './http-fixture.js';

const CURL = '/usr/bin/curl';
// Large enough that other traffic on the machine during the few seconds of the window stays well under 2%.
const DOWNLOAD_BYTES = 256 * 1024 * 1024;

interface Throughput { window: number; samples: Array<{ ts: string; up_bytes: number; down_bytes: number }> }

/** `/bytes` sends DOWNLOAD_BYTES; `/slow` trickles 64 KiB every 100 ms until the client leaves. */
async function startServer(t: { after: (fn: () => Promise<void> | void) => void }): Promise<string> {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const server = createServer((request, response) => {
    if (request.url === '/bytes') {
      response.writeHead(200, { 'content-length': String(DOWNLOAD_BYTES) });
      let sent = 0;
      const pump = (): void => {
        while (sent < DOWNLOAD_BYTES) {
          sent += chunk.length;
          if (!response.write(chunk)) return;
        }
        response.end();
      };
      response.on('drain', pump);
      pump();
      return;
    }
    response.writeHead(200);
    const timer = setInterval(() => response.write(chunk), 100);
    response.on('close', () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('live views (e2e)', privilegedSuite(), () => {
  test('/throughput totals over a download agree with its size within 2%', async (t) => {
    const service = await NetClampService.start();
    t.after(() => service.dispose());
    const base = await startServer(t);
    // The data plane counts all traffic on the machine. Three quiet seconds first give the background rate
    // (other processes, other tests), which is taken off the seconds that cover the transfer.
    await sleep(4500);
    const started = Date.now();
    const download = await timedRun(CURL, ['-sS', '-o', '/dev/null', '--max-time', '60', `${base}/bytes`], 70_000);
    assert.equal(download.code, 0, download.stderr);
    const ended = Date.now();
    await sleep(2500); // the reading after the last byte has been taken
    const body = await service.expect<Throughput>(200, 'GET', '/throughput?window=60');
    assert.equal(body.samples.length, 60);
    // Growth lands in the second of the reading that saw it: from the start's second to one past the end's.
    const first = Math.floor(started / 1000);
    const last = Math.floor(ended / 1000) + 1;
    const second = (sample: { ts: string }): number => Date.parse(sample.ts) / 1000;
    const during = body.samples.filter((sample) => second(sample) >= first && second(sample) <= last);
    const before = body.samples.filter((sample) => second(sample) >= first - 3 && second(sample) < first);
    assert.equal(during.length, last - first + 1);
    assert.equal(before.length, 3);
    const sum = (list: typeof during, key: 'up_bytes' | 'down_bytes'): number => list.reduce((total, sample) => total + sample[key], 0);
    const down = sum(during, 'down_bytes') - (sum(before, 'down_bytes') / 3) * during.length;
    const up = sum(during, 'up_bytes') - (sum(before, 'up_bytes') / 3) * during.length;
    t.diagnostic(`transferred ${DOWNLOAD_BYTES} B in ${ended - started} ms; /throughput over ${during.length} s minus background: down ${Math.round(down)} B (${(100 * down / DOWNLOAD_BYTES).toFixed(2)}%), up ${Math.round(up)} B (${(100 * up / DOWNLOAD_BYTES).toFixed(2)}%)`);
    // Loopback: curl receives the body (down) and this process's server sends it (up).
    assert.ok(Math.abs(down - DOWNLOAD_BYTES) <= 0.02 * DOWNLOAD_BYTES, `down ${down} vs ${DOWNLOAD_BYTES}`);
    assert.ok(Math.abs(up - DOWNLOAD_BYTES) <= 0.02 * DOWNLOAD_BYTES, `up ${up} vs ${DOWNLOAD_BYTES}`);
  });

  test('a running download shows in /connections and /apps, and in the /status counts', async (t) => {
    const service = await NetClampService.start();
    t.after(() => service.dispose());
    const base = await startServer(t);
    const app = copyExecutable(CURL);
    t.after(() => app.remove());
    const curl = spawn(app.path, ['-sS', '-o', '/dev/null', '--max-time', '30', `${base}/slow`], { stdio: 'ignore' });
    t.after(() => {
      if (curl.exitCode === null && curl.signalCode === null) curl.kill('SIGKILL');
    });
    const pid = curl.pid!;
    const port = Number(new URL(base).port);

    const connections = await eventually(async () => {
      const list = await service.expect<Array<Record<string, unknown>>>(200, 'GET', '/connections');
      return list.some((c) => c.pid === pid) ? list : null;
    }, 3000);
    assert.ok(connections, 'the download is not in /connections');
    const mine = connections.find((c) => c.pid === pid)!;
    assert.deepEqual(
      { protocol: mine.protocol, remote_address: mine.remote_address, remote_port: mine.remote_port, state: mine.state, app_path: mine.app_path },
      { protocol: 'TCP', remote_address: '127.0.0.1', remote_port: port, state: 'ESTABLISHED', app_path: app.path },
    );

    await sleep(2500);
    const apps = await service.expect<Array<Record<string, unknown>>>(200, 'GET', '/apps');
    const entry = apps.find((a) => a.pid === pid);
    assert.ok(entry, `curl ${pid} is not in /apps`);
    assert.equal(entry.path, app.path);
    assert.ok(Number(entry.bytes_down) >= 2 * 640 * 1024 * 0.8, `bytes_down ${entry.bytes_down} after ~3 s at 640 KiB/s`);
    assert.ok(Number(entry.rate_down) > 300 * 1024 && Number(entry.rate_down) < 1300 * 1024, `rate_down ${entry.rate_down}, sent at 640 KiB/s`);
    assert.equal(entry.connections, 1);
    const detail = await service.expect<Record<string, unknown>>(200, 'GET', `/apps/${pid}`);
    assert.equal((detail.connection_list as unknown[]).length, 1);

    const status = await service.status();
    assert.ok(Number(status.active_connections) >= 2, 'both ends of the download at least');
    assert.ok(Number(status.monitored_apps) >= 2, 'curl and this test process at least');

    curl.kill('SIGKILL');
    await eventually(async () => (await service.request('GET', `/apps/${pid}`)).status === 404, 3000);
    assert.equal((await service.request('GET', `/apps/${pid}`)).status, 404, 'an exited process is still listed');
  });
});
