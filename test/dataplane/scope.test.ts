/**
 * LIMIT scopes with real TCP over the 20 ms relay path: a copy of iperf3 (the app) downloads from the real
 * /usr/bin/iperf3 (no rule) in a peer namespace. PER_APP shares one budget among all connections and
 * processes of the executable, PER_CONNECTION gives each connection its own, PER_PROCESS each process.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { NativeEngine } from '../../lib/engine/native.js';
import type { LimitScope } from '../../lib/engine/engine.js';
import { privilegedSuite } from '../helpers/privileged.js';
import { NetLab, type IperfServer, type NetPath } from '../net/netlab.js';
import { copyExecutable, runIperf, type IperfResult } from '../net/iperf.js';
import { rule } from './support.js';

const LIMIT = 1024 * 1024;
const SECONDS = 6;
const OMIT_SECONDS = 2;

interface IperfStreamEnd {
  receiver?: { bytes: number; seconds: number };
}

/** Goodput of each connection of one iperf3 run, B/s, as the receiving side counted it. */
function perConnection(result: IperfResult): number[] {
  const streams = (result.raw as { end?: { streams?: IperfStreamEnd[] } }).end?.streams ?? [];
  return streams.map((s) => {
    assert.ok(s.receiver && s.receiver.seconds > 0, 'iperf3 JSON lacks per-stream receiver figures');
    return s.receiver.bytes / s.receiver.seconds;
  });
}

const mib = (bytesPerSec: number): string => (bytesPerSec / LIMIT).toFixed(3);

describe('LIMIT scopes over the 20 ms relay (NativeEngine, real traffic)', privilegedSuite(), () => {
  let engine: NativeEngine;
  let lab: NetLab;
  let app: { path: string; remove: () => void };
  let path: NetPath;
  let servers: IperfServer[];
  let nextId = 7000;

  before(async () => {
    lab = new NetLab();
    app = copyExecutable('/usr/bin/iperf3', 'nc-scope-');
    path = await lab.relayPath();
    servers = [await lab.startIperfServer(path), await lab.startIperfServer(path)];
    engine = new NativeEngine();
    await engine.open();
  });

  after(async () => {
    try {
      await engine?.close();
    } finally {
      lab?.cleanup();
      app?.remove();
    }
  });

  async function withLimit<T>(limitScope: LimitScope, body: () => Promise<T>): Promise<T> {
    const id = nextId++;
    await engine.applyRule(rule({ id, action: 'LIMIT', appPath: app.path, limitScope, rateDownBytesPerSec: LIMIT }));
    try {
      return await body();
    } finally {
      await engine.removeRule(id);
    }
  }

  const download = (server: IperfServer, parallel: number): Promise<IperfResult> =>
    runIperf({ ns: path.clientNs, binary: app.path, server, seconds: SECONDS, omitSeconds: OMIT_SECONDS, parallel, reverse: true });

  test('PER_CONNECTION 1 MiB/s: four parallel downloads get about 1 MiB/s each', async (t) => {
    const rates = await withLimit('PER_CONNECTION', async () => perConnection(await download(servers[0]!, 4)));
    t.diagnostic(`per connection, MiB/s: ${rates.map(mib).join(' ')}`);
    assert.equal(rates.length, 4);
    for (const rate of rates) assert.ok(rate >= 0.8 * LIMIT && rate <= 1.05 * LIMIT, `a connection ran at ${mib(rate)} MiB/s`);
  });

  test('PER_APP 1 MiB/s: four parallel downloads get about 1 MiB/s together', async (t) => {
    const rates = await withLimit('PER_APP', async () => perConnection(await download(servers[0]!, 4)));
    const sum = rates.reduce((a, b) => a + b, 0);
    t.diagnostic(`per connection, MiB/s: ${rates.map(mib).join(' ')}; sum ${mib(sum)}`);
    assert.equal(rates.length, 4);
    assert.ok(sum >= 0.85 * LIMIT && sum <= 1.05 * LIMIT, `the four together ran at ${mib(sum)} MiB/s`);
  });

  test('PER_PROCESS 1 MiB/s: two processes of the same binary get about 1 MiB/s each', async (t) => {
    const rates = await withLimit('PER_PROCESS', async () => {
      const results = await Promise.all([download(servers[0]!, 2), download(servers[1]!, 2)]);
      return results.map((r) => r.goodputBytesPerSec);
    });
    t.diagnostic(`per process, MiB/s: ${rates.map(mib).join(' ')}`);
    for (const rate of rates) assert.ok(rate >= 0.8 * LIMIT && rate <= 1.05 * LIMIT, `a process ran at ${mib(rate)} MiB/s`);
  });
});
