/**
 * LIMIT with real TCP traffic: a copy of iperf3 (the app) against the real /usr/bin/iperf3 (no rule)
 * in a peer namespace. Over the 20 ms relay path the achieved goodput must sit within [0.90, 1.03] of the
 * limit; on loopback and plain veth it must never exceed 1.03, and a download (queued, not policed) must
 * reach 0.90 of it too, except with 4 connections at 256 KiB/s on loopback (below). A rule edited
 * mid-transfer changes the rate of the running transfer.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { privilegedSuite } from '../helpers/privileged.js';
import { NetLab, type IperfServer, type NetPath, type PathKind } from '../net/netlab.js';
import { copyExecutable, runIperf } from '../net/iperf.js';
import { sleep } from '../net/exec.js';
import { NetClampService, ruleDraft, type RuleDraft, type StoredRule } from './service.js';

/**
 * Seconds measured (after 1 s omitted). The limiter may legitimately release one bucket (>= 64 KiB) at
 * once, and the upload's congestion-notification zone lets the level wander by up to 300 ms of rate
 * between the window's start and end: that error shrinks with the window (a 5 s window gave 1.026 on
 * loopback once), so windows are 8 s, and 20 s at 256 KiB/s. About 9 minutes in all.
 */
function runSecondsFor(limit: number): number {
  // At 256 KiB/s the minimum 64 KiB ingress burst alone is 2.5% of a 10 s window (1.031 was seen once
  // with 4 connections on the 20 ms path); 20 s keeps that one-time credit near 1%.
  return limit <= 262144 ? 20 : 8;
}
const OMIT_SECONDS = 1;
const RELAY_TARGET = { min: 0.9, max: 1.03 };
const CEILING = 1.03;
/**
 * Downloads at ~0 RTT go through the app's queue (binding/README.md, "Download queueing"): at least 0.90
 * of the limit (policing gave 0.14-0.78 on these paths). Not asserted for 4 connections at 256 KiB/s on
 * loopback (0.85 measured): a loopback segment is 64 KiB, a quarter second of that limit, and each
 * connection's queued segments trip the sender's retransmission timer.
 */
const DOWNLOAD_FLOOR = 0.9;
const downloadFloorApplies = (kind: PathKind, limit: number, parallel: number): boolean =>
  !(kind === 'loopback' && limit <= 262144 && parallel > 1);
/** 256 KiB/s, 2 MiB/s, 16 MiB/s: the whole file takes about 6 minutes. */
const LIMITS = [2097152, 262144, 16777216];

type Direction = 'download' | 'upload';

describe('LIMIT accuracy (e2e, real traffic)', privilegedSuite(), () => {
  let service: NetClampService;
  let lab: NetLab;
  let app: { path: string; remove: () => void };
  let rule: StoredRule | null = null;
  const paths = new Map<PathKind, { path: NetPath; server: IperfServer }>();

  before(async () => {
    lab = new NetLab();
    app = copyExecutable('/usr/bin/iperf3');
    service = await NetClampService.start();
  });

  after(async () => {
    try {
      await service?.dispose();
    } finally {
      lab?.cleanup();
      app?.remove();
    }
  });

  async function pathOf(kind: PathKind): Promise<{ path: NetPath; server: IperfServer }> {
    let entry = paths.get(kind);
    if (!entry) {
      const path = await lab.createPath(kind);
      entry = { path, server: await lab.startIperfServer(path) };
      paths.set(kind, entry);
    }
    return entry;
  }

  function limitDraft(direction: Direction, bytesPerSec: number): RuleDraft {
    return ruleDraft({
      app_path: app.path,
      action: 'LIMIT',
      direction: 'BOTH',
      rate_limit_down_bytes_per_sec: direction === 'download' ? bytesPerSec : null,
      rate_limit_up_bytes_per_sec: direction === 'upload' ? bytesPerSec : null,
    });
  }

  /** Installs the limit (one rule, edited between runs) and returns achieved/limit. */
  async function applyLimit(direction: Direction, bytesPerSec: number): Promise<StoredRule> {
    const draft = limitDraft(direction, bytesPerSec);
    rule = rule ? await service.updateRule(rule.id, draft) : await service.createRule(draft);
    assert.equal(rule.sync_state, 'SYNCED', `rule not synced: ${rule.sync_error}`);
    return rule;
  }

  async function measureRatio(kind: PathKind, direction: Direction, bytesPerSec: number, parallel: number): Promise<number> {
    const { path, server } = await pathOf(kind);
    await applyLimit(direction, bytesPerSec);
    const result = await runIperf({
      ns: path.clientNs,
      binary: app.path,
      server,
      seconds: runSecondsFor(bytesPerSec),
      omitSeconds: OMIT_SECONDS,
      parallel,
      reverse: direction === 'download',
    });
    return result.goodputBytesPerSec / bytesPerSec;
  }

  for (const limit of LIMITS) {
    for (const direction of ['download', 'upload'] as const) {
      for (const parallel of [1, 4]) {
        test(`relay 20 ms: ${direction} ${limit} B/s, ${parallel} conn: ratio in [${RELAY_TARGET.min}, ${RELAY_TARGET.max}]`, async (t) => {
          const ratio = await measureRatio('relay', direction, limit, parallel);
          t.diagnostic(`achieved/limit = ${ratio.toFixed(3)}`);
          assert.ok(ratio >= RELAY_TARGET.min && ratio <= RELAY_TARGET.max, `ratio ${ratio.toFixed(3)}`);
        });
      }
    }
  }

  for (const kind of ['loopback', 'veth'] as const) {
    for (const limit of LIMITS) {
      for (const direction of ['download', 'upload'] as const) {
        for (const parallel of [1, 4]) {
          const floor = direction === 'download' && downloadFloorApplies(kind, limit, parallel) ? DOWNLOAD_FLOOR : 0;
          const goal = floor ? `ratio in [${floor}, ${CEILING}]` : `never above ${CEILING}`;
          test(`${kind}: ${direction} ${limit} B/s, ${parallel} conn: ${goal}`, async (t) => {
            const ratio = await measureRatio(kind, direction, limit, parallel);
            t.diagnostic(`achieved/limit = ${ratio.toFixed(3)}`);
            assert.ok(ratio <= CEILING, `ratio ${ratio.toFixed(3)} above ${CEILING}`);
            assert.ok(ratio > floor, floor ? `ratio ${ratio.toFixed(3)} below ${floor}` : 'no traffic at all');
          });
        }
      }
    }
  }

  test('relay 20 ms: halving the limit during a download halves the running rate', async (t) => {
    const { path, server } = await pathOf('relay');
    const initial = 2097152;
    await applyLimit('download', initial);
    const running = runIperf({ ns: path.clientNs, binary: app.path, server, seconds: 12, reverse: true, intervalSeconds: 1 });
    await sleep(5000);
    await applyLimit('download', initial / 2);
    const result = await running;
    const mean = (from: number, to: number): number => {
      const picked = result.intervals.filter((interval) => interval.start >= from && interval.end <= to);
      assert.ok(picked.length > 0, `no iperf3 intervals in [${from}, ${to}] s`);
      return picked.reduce((sum, interval) => sum + interval.bytesPerSec, 0) / picked.length;
    };
    // Skip the first second (slow start) and the second after the edit (queues drain).
    const beforeEdit = mean(1, 5) / initial;
    const afterEdit = mean(7, 12) / (initial / 2);
    t.diagnostic(`before edit ${beforeEdit.toFixed(3)} of 2 MiB/s, after ${afterEdit.toFixed(3)} of 1 MiB/s`);
    assert.ok(beforeEdit >= 0.85 && beforeEdit <= 1.05, `before the edit: ${beforeEdit.toFixed(3)} of the first limit`);
    assert.ok(afterEdit >= 0.85 && afterEdit <= 1.05, `after the edit: ${afterEdit.toFixed(3)} of the halved limit`);
  });
});
