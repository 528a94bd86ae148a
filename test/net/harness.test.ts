/**
 * The harness checks itself: the relay adds the promised delay and carries enough traffic, every path
 * passes packets, and cleanup leaves no namespace or relay behind. No NetClamp involved.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { privilegedSuite } from '../helpers/privileged.js';
import { NetLab, namespaceExists, removeStaleNamespaces } from './netlab.js';
import { pingRttMs, runIperf } from './iperf.js';
import { sleep } from './exec.js';

/** True once `pid` has exited (a zombie counts: its parent, this process, reaps it asynchronously). */
async function processGone(pid: number, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let state: string;
    try {
      state = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').charAt(0);
    } catch {
      return true;
    }
    if (state === 'Z') return true;
    await sleep(50);
  }
  return false;
}

/** The rates under test go up to 16 MiB/s; the relay must not be what limits them. */
const RELAY_MIN_BYTES_PER_SEC = 20 * 1024 * 1024;

describe('network harness', privilegedSuite(), () => {
  test('relay path adds 10 ms each way (20 ms RTT) without loss', async (t) => {
    const lab = new NetLab();
    t.after(() => lab.cleanup());
    const path = await lab.relayPath({ oneWayDelayMs: 10 });
    const rtt = await pingRttMs(path.clientNs, path.serverAddress, 10);
    assert.equal(rtt.loss, 0, 'no ping may be lost');
    assert.ok(rtt.min >= 19.5, `RTT min ${rtt.min} ms must include both 10 ms delays`);
    // The minimum, not the average: on a busy 2-core machine the average carries scheduling noise,
    // while the fastest round trip still shows what the relay itself adds.
    assert.ok(rtt.min <= 22, `RTT min ${rtt.min} ms: the relay adds more than its delay`);
  });

  test('a different delay gives a different RTT (the delay is the relay\'s, not an accident)', async (t) => {
    const lab = new NetLab();
    t.after(() => lab.cleanup());
    const path = await lab.relayPath({ oneWayDelayMs: 2 });
    const rtt = await pingRttMs(path.clientNs, path.serverAddress, 5);
    assert.equal(rtt.loss, 0);
    assert.ok(rtt.min >= 3.5 && rtt.min <= 6, `RTT min ${rtt.min} ms for 2 ms each way`);
  });

  test(`relay carries at least ${RELAY_MIN_BYTES_PER_SEC} B/s each way`, async (t) => {
    const lab = new NetLab();
    t.after(() => lab.cleanup());
    const path = await lab.relayPath();
    const server = await lab.startIperfServer(path);
    for (const reverse of [false, true]) {
      const result = await runIperf({ ns: path.clientNs, binary: '/usr/bin/iperf3', server, seconds: 3, reverse });
      t.diagnostic(`relay ${reverse ? 'download' : 'upload'}: ${(result.goodputBytesPerSec / 1e6).toFixed(1)} MB/s`);
      assert.ok(
        result.goodputBytesPerSec >= RELAY_MIN_BYTES_PER_SEC,
        `relay ${reverse ? 'download' : 'upload'} only ${result.goodputBytesPerSec} B/s`,
      );
    }
  });

  test('veth and loopback paths pass traffic with low RTT', async (t) => {
    const lab = new NetLab();
    t.after(() => lab.cleanup());
    for (const path of [await lab.vethPath(), await lab.loopbackPath()]) {
      const rtt = await pingRttMs(path.clientNs, path.serverAddress, 3);
      assert.equal(rtt.loss, 0, `${path.kind}: ping lost`);
      assert.ok(rtt.avg < 5, `${path.kind}: RTT ${rtt.avg} ms`);
      const server = await lab.startIperfServer(path);
      const result = await runIperf({ ns: path.clientNs, binary: '/usr/bin/iperf3', server, seconds: 1 });
      assert.ok(result.receivedBytes > 0, `${path.kind}: iperf3 moved nothing`);
    }
  });

  test('cleanup removes namespaces and kills the relay', async () => {
    const lab = new NetLab();
    let relayPids: string[] = [];
    try {
      await lab.relayPath();
      await lab.vethPath();
      relayPids = execFileSync('ip', ['netns', 'pids', lab.namespaceNames[1]!], { encoding: 'utf8' }).split(/\s+/).filter(Boolean);
      assert.ok(relayPids.length > 0, 'the relay should run inside the client namespace');
    } finally {
      const names = [...lab.namespaceNames];
      lab.cleanup();
      for (const name of names) assert.equal(namespaceExists(name), false, `${name} still exists`);
    }
    for (const pid of relayPids) {
      assert.ok(await processGone(Number(pid)), `process ${pid} survived cleanup`);
    }
  });

  test('namespaces of a dead test process are removed by the next lab', () => {
    // A pid that cannot be alive: above the kernel's pid_max.
    const stale = 'nc-4194305-1-0a';
    execFileSync('ip', ['netns', 'add', stale]);
    try {
      assert.ok(removeStaleNamespaces().includes(stale));
      assert.equal(namespaceExists(stale), false);
    } finally {
      if (namespaceExists(stale)) execFileSync('ip', ['netns', 'delete', stale]);
    }
  });
});
