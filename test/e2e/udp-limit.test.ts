/**
 * LIMIT on UDP with real traffic: a copy of iperf3 (the app) sends, or receives, datagrams at twice the
 * limit over a veth pair. What arrives must be the limit within 2%, and the rule's counters must account
 * for every datagram that got through (nothing of UDP escapes the counters) and for nothing that was
 * dropped (they are not the offered load).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { privilegedSuite } from '../helpers/privileged.js';
import { NetLab, type IperfServer, type NetPath } from '../net/netlab.js';
import { copyExecutable, runIperf } from '../net/iperf.js';
import { sleep } from '../net/exec.js';
import { NetClampService, ruleDraft, type StoredRule } from './service.js';

const LIMIT = 1048576;
const DATAGRAM = 1400;
/** NetClamp counts IP packets (cgroup_skb sees skb->len from the IP header): payload + IPv4 + UDP. */
const IP_BYTES_PER_DATAGRAM = DATAGRAM + 20 + 8;
/** Long enough that the egress debt zone (300 ms of rate, passed once at the start) stays under 3%. */
const SECONDS = 12;

describe('LIMIT on UDP (e2e, real traffic)', privilegedSuite(), () => {
  let service: NetClampService;
  let lab: NetLab;
  let app: { path: string; remove: () => void };
  let path: NetPath;
  let server: IperfServer;

  before(async () => {
    lab = new NetLab();
    app = copyExecutable('/usr/bin/iperf3', 'nc-udp-app-');
    path = await lab.vethPath();
    server = await lab.startIperfServer(path);
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

  /** Counter of `field` once two reads a second apart agree (the service may sample the kernel periodically). */
  async function settledCounter(id: string, field: 'bytes_up' | 'bytes_down'): Promise<number> {
    let previous = -1;
    for (let attempt = 0; attempt < 10; attempt++) {
      const rule = await service.expect<StoredRule>(200, 'GET', `/rules/${id}`);
      if (rule[field] === previous) return previous;
      previous = rule[field];
      await sleep(1000);
    }
    return previous;
  }

  for (const direction of ['upload', 'download'] as const) {
    test(`${direction}: a sender at 2x the limit is held within 2%, and the counters match what arrived`, async (t) => {
      const field = direction === 'upload' ? 'bytes_up' : 'bytes_down';
      const rule = await service.createRule(ruleDraft({
        app_path: app.path,
        action: 'LIMIT',
        protocol: 'UDP',
        rate_limit_up_bytes_per_sec: direction === 'upload' ? LIMIT : null,
        rate_limit_down_bytes_per_sec: direction === 'download' ? LIMIT : null,
      }));
      try {
        assert.equal(rule.sync_state, 'SYNCED', `rule not synced: ${rule.sync_error}`);
        const before = rule[field];
        const result = await runIperf({
          ns: path.clientNs, binary: app.path, server, seconds: SECONDS, reverse: direction === 'download',
          udpBytesPerSec: 2 * LIMIT, udpLength: DATAGRAM,
        });
        const ratio = result.goodputBytesPerSec / LIMIT;
        // The offer really was above the limit, or the test proves nothing.
        assert.ok(result.sentBytes / result.seconds > 1.8 * LIMIT, `sender offered only ${result.sentBytes / result.seconds} B/s`);
        assert.ok(ratio >= 0.98 && ratio <= 1.02, `UDP ${direction} goodput/limit ${ratio.toFixed(3)} outside [0.98, 1.02]`);

        const counted = (await settledCounter(rule.id, field)) - before;
        const arrivedIpBytes = (result.receivedBytes / DATAGRAM) * IP_BYTES_PER_DATAGRAM;
        const counterRatio = counted / arrivedIpBytes;
        t.diagnostic(`goodput/limit ${ratio.toFixed(4)}, counted/arrived ${counterRatio.toFixed(4)}, offered ${(result.sentBytes / result.seconds / LIMIT).toFixed(2)}x`);
        // Lower bound: nothing that arrived escaped the counter. Upper bound: dropped datagrams (half the
        // offer) are not counted as passed; 3% covers the TCP control connection, which the rule (UDP)
        // must not count at all, plus datagrams still in flight when iperf3 stopped counting.
        assert.ok(counterRatio >= 0.995, `counter saw ${counted} B, ${arrivedIpBytes} IP bytes arrived (ratio ${counterRatio.toFixed(4)}): UDP escaped the counter`);
        assert.ok(counterRatio <= 1.03, `counter saw ${counted} B for ${arrivedIpBytes} IP bytes that arrived (ratio ${counterRatio.toFixed(4)})`);
      } finally {
        await service.request('DELETE', `/rules/${rule.id}`);
      }
    });
  }
});
