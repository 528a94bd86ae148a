/**
 * Download queueing (binding/src/linux/download_queues.cc): a PER_APP download limit is held at ~0 RTT
 * by an HTB class on a queue device (IFB) in the app's network namespace, where policing alone left
 * 0.14-0.78 of the limit on loopback. The queue follows the rule, and goes with the engine; a queue
 * device left by a killed engine is removed by the next one.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { NativeEngine } from '../../lib/engine/native.js';
import { privilegedSuite } from '../helpers/privileged.js';
import { runQuietSync, runSyncText } from '../net/exec.js';
import { NetLab, type IperfServer, type NetPath } from '../net/netlab.js';
import { copyExecutable, runIperf } from '../net/iperf.js';
import { rule } from './support.js';

const MIB = 1024 * 1024;
const QUEUE_MAJOR = '4e43';

function deviceExists(ns: string, name: string): boolean {
  return runQuietSync('ip', ['-n', ns, 'link', 'show', 'dev', name]);
}

/** HTB classes on a device: class id -> rate in bytes/s (tc prints rates in bits with a unit). */
function htbRates(ns: string, device: string): Map<string, number> {
  const text = runSyncText('tc', ['-n', ns, 'class', 'show', 'dev', device]);
  const rates = new Map<string, number>();
  for (const match of text.matchAll(/class htb (\S+) .*?\brate (\d+(?:\.\d+)?)([KMG]?)bit/g)) {
    const scale = { '': 1, K: 1e3, M: 1e6, G: 1e9 }[match[3] as '' | 'K' | 'M' | 'G'];
    rates.set(match[1]!, (Number(match[2]) * scale) / 8);
  }
  return rates;
}

/** The queue classes (not their per-connection children) on a device: minors that are multiples of 16. */
function queueRates(ns: string, device: string): number[] {
  return [...htbRates(ns, device)]
    .filter(([id]) => id.startsWith(`${QUEUE_MAJOR}:`) && parseInt(id.split(':')[1]!, 16) % 16 === 0)
    .map(([, rate]) => rate);
}

const near = (actual: number, expected: number): boolean => Math.abs(actual - expected) <= expected * 0.002;

describe('download queueing (NativeEngine, real traffic)', privilegedSuite(), () => {
  let engine: NativeEngine;
  let lab: NetLab;
  let app: { path: string; remove: () => void };
  let path: NetPath;
  let server: IperfServer;
  const device = `nc-q${process.pid}`;

  before(async () => {
    lab = new NetLab();
    app = copyExecutable('/usr/bin/iperf3', 'nc-queue-');
    path = await lab.createPath('loopback');
    server = await lab.startIperfServer(path);
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

  const limit = (id: number, rateDownBytesPerSec: number) =>
    rule({ id, action: 'LIMIT', appPath: app.path, rateDownBytesPerSec, limitScope: 'PER_APP' });

  test('loopback: a 2 MiB/s download limit holds within [0.95, 1.03], through a queue in the app\'s namespace', async (t) => {
    await engine.applyRule(limit(1, 2 * MIB));
    const result = await runIperf({ ns: path.clientNs, binary: app.path, server, seconds: 6, omitSeconds: 1, parallel: 1, reverse: true });
    const ratio = result.goodputBytesPerSec / (2 * MIB);
    t.diagnostic(`achieved/limit = ${ratio.toFixed(3)}`);
    assert.ok(ratio >= 0.95 && ratio <= 1.03, `ratio ${ratio.toFixed(3)}`);
    assert.ok(deviceExists(path.clientNs, device), `no queue device ${device} in ${path.clientNs}`);
    assert.deepEqual(queueRates(path.clientNs, device).map((rate) => near(rate, 2 * MIB)), [true], 'one queue class at the limit');
  });

  test('the queue follows the rule: a new limit retunes it, removing the rule deletes it, close deletes the device', async () => {
    await engine.applyRule(limit(1, MIB));
    const rates = queueRates(path.clientNs, device);
    assert.equal(rates.length, 1);
    assert.ok(near(rates[0]!, MIB), `queue class at ${rates[0]} B/s after the edit, not ${MIB}`);
    await engine.removeRule(1);
    assert.deepEqual([...htbRates(path.clientNs, device).keys()], [], 'classes left after the rule went');
    await engine.close();
    assert.ok(!deviceExists(path.clientNs, device), 'the queue device outlived the engine');
    await engine.open();
  });

  test('a queue device left by an engine that no longer runs is removed when its namespace is next seen', async () => {
    const ns = await lab.createNamespace('q');
    const stale = 'nc-q4194304'; // pids stay below the kernel's limit of 4194304: no process has this one
    assert.ok(runQuietSync('ip', ['-n', ns, 'link', 'add', stale, 'type', 'ifb']), 'cannot create the stale device');
    await engine.applyRule(limit(2, MIB)); // a queueing rule makes the engine look at namespaces at once
    assert.ok(!deviceExists(ns, stale), `${stale} still exists in ${ns}`);
    await engine.removeRule(2);
  });
});
