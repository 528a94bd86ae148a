/**
 * The three shapers the bench compares on the same workload: NetClamp (one LIMIT rule on a copy of
 * iperf3), trickle (LD_PRELOAD user-space shaper, Debian package) and a hand-written tc HTB setup.
 * Each exposes `prepare` (set the limit, return an undo) and how to run the client under it.
 */
import { run, runQuietSync } from '../test/net/exec.js';
import type { NetPath } from '../test/net/netlab.js';
import { NetClampService, ruleDraft, type StoredRule } from '../test/e2e/service.js';

export type ShaperName = 'netclamp' | 'trickle' | 'htb';
export type Direction = 'download' | 'upload';

export interface ShapeRequest {
  path: NetPath;
  direction: Direction;
  limitBytesPerSec: number;
  serverPort: number;
  protocol: 'tcp' | 'udp';
}

export interface Prepared {
  /** Words put before the client binary (trickle). */
  prefix: string[];
  /** Which client binary to run: NetClamp's rule matches only `app`; the others run `plain`. */
  binary: 'app' | 'plain';
  /** Shaper-side byte counters once the run is over (HTB class stats, NetClamp rule counters). */
  counters(): Promise<ShaperCounters | null>;
  undo(): Promise<void>;
}

export interface ShaperCounters {
  bytes: number;
  packets: number | null;
}

export interface Shaper {
  name: ShaperName;
  prepare(request: ShapeRequest): Promise<Prepared>;
  /** Releases whatever the shaper holds for the whole run (NetClamp's rule). */
  dispose(): Promise<void>;
}

/** NetClamp: one LIMIT rule on the app copy, updated in place from cell to cell. */
export class NetClampShaper implements Shaper {
  readonly name = 'netclamp';
  private rule: StoredRule | null = null;

  constructor(
    private readonly service: NetClampService,
    private readonly appPath: string,
  ) {}

  async prepare(request: ShapeRequest): Promise<Prepared> {
    const draft = ruleDraft({
      app_path: this.appPath,
      action: 'LIMIT',
      rate_limit_down_bytes_per_sec: request.direction === 'download' ? request.limitBytesPerSec : null,
      rate_limit_up_bytes_per_sec: request.direction === 'upload' ? request.limitBytesPerSec : null,
      enabled: true,
    });
    this.rule = this.rule ? await this.service.updateRule(this.rule.id, draft) : await this.service.createRule(draft);
    if (this.rule.sync_state !== 'SYNCED') throw new Error(`rule ${this.rule.sync_state}: ${this.rule.sync_error}`);
    const before = this.rule;
    return {
      prefix: [],
      binary: 'app',
      counters: async () => {
        const now = await this.service.expect<StoredRule>(200, 'GET', `/rules/${before.id}`);
        const field = request.direction === 'download' ? 'bytes_down' : 'bytes_up';
        return { bytes: now[field] - before[field], packets: null };
      },
      // Disabled between cells so trickle/HTB runs see no NetClamp limit at all.
      undo: async () => {
        if (this.rule) this.rule = await this.service.updateRule(this.rule.id, { ...draft, enabled: false });
      },
    };
  }

  async dispose(): Promise<void> {
    if (this.rule) await this.service.request('DELETE', `/rules/${this.rule.id}`);
    this.rule = null;
  }
}

/** trickle in standalone mode; its rates are KiB/s (it multiplies by 1024). */
export class TrickleShaper implements Shaper {
  readonly name = 'trickle';

  async prepare(request: ShapeRequest): Promise<Prepared> {
    const kib = String(Math.max(1, Math.round(request.limitBytesPerSec / 1024)));
    return {
      prefix: ['trickle', '-s', request.direction === 'download' ? '-d' : '-u', kib],
      binary: 'plain',
      counters: async () => null,
      undo: async () => {},
    };
  }

  async dispose(): Promise<void> {}
}

/** Ethernet + IPv4 + TCP with timestamps: what HTB counts on top of each data segment's payload. */
export const TCP_FRAME_OVERHEAD = 14 + 20 + 32;
export const UDP_FRAME_OVERHEAD = 14 + 20 + 8;

/**
 * HTB on the sending side's egress: the app's device for upload, the peer's device for download (on
 * loopback both are `lo`). A u32 filter on the iperf3 server port picks the data direction into the
 * shaped class; everything else (ACKs, the control connection's replies) bypasses at line rate.
 */
export class HtbShaper implements Shaper {
  readonly name = 'htb';

  async prepare(request: ShapeRequest): Promise<Prepared> {
    const { path, direction } = request;
    const ns = direction === 'upload' ? path.clientNs : path.serverNs;
    const device = path.kind === 'loopback' ? 'lo' : path.kind === 'veth' ? (direction === 'upload' ? 'ncveth0' : 'ncveth1') : 'nctap0';
    const rate = `${Math.round(request.limitBytesPerSec)}bps`; // tc: "bps" is bytes per second
    // A burst below one GSO/TSO skb (64 KiB) makes HTB stall; 5 ms of rate above that.
    const burst = String(Math.max(2 * 65536, Math.round(request.limitBytesPerSec / 200)));
    const tc = (args: string[]): Promise<unknown> => run('ip', ['netns', 'exec', ns, 'tc', ...args]);
    runQuietSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', device, 'root']);
    await tc(['qdisc', 'add', 'dev', device, 'root', 'handle', '1:', 'htb']);
    await tc(['class', 'add', 'dev', device, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', rate, 'ceil', rate,
      'burst', burst, 'cburst', burst, 'quantum', '65536']);
    // The class's default FIFO holds txqueuelen packets: at 64 KiB/s that is minutes of queue, and the
    // iperf3 control connection (same server port) then waits behind it past the run's timeout. A byte
    // FIFO of 200 ms of rate (at least 256 KiB) is what a user would configure.
    const queueBytes = String(Math.max(262144, Math.round(request.limitBytesPerSec / 5)));
    await tc(['qdisc', 'add', 'dev', device, 'parent', '1:10', 'handle', '10:', 'bfifo', 'limit', queueBytes]);
    const portMatch = direction === 'upload' ? 'dport' : 'sport';
    const proto = request.protocol === 'udp' ? '17' : '6';
    await tc(['filter', 'add', 'dev', device, 'parent', '1:', 'protocol', 'ip', 'prio', '1', 'u32',
      'match', 'ip', 'protocol', proto, '0xff', 'match', 'ip', portMatch, String(request.serverPort), '0xffff', 'flowid', '1:10']);
    return {
      prefix: [],
      binary: 'plain',
      counters: async () => {
        const out = (await run('ip', ['netns', 'exec', ns, 'tc', '-s', 'class', 'show', 'dev', device, 'classid', '1:10'])) as { stdout: string };
        const sent = /Sent (\d+) bytes (\d+) pkt/.exec(out.stdout);
        return sent ? { bytes: Number(sent[1]), packets: Number(sent[2]) } : null;
      },
      undo: async () => {
        runQuietSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', device, 'root']);
      },
    };
  }

  async dispose(): Promise<void> {}
}

/** Jain's fairness index over per-connection goodputs: 1 = equal shares, 1/n = one takes all. */
export function jainIndex(values: readonly number[]): number | null {
  if (values.length < 2) return null;
  const sum = values.reduce((a, b) => a + b, 0);
  const squares = values.reduce((a, b) => a + b * b, 0);
  return squares === 0 ? null : (sum * sum) / (values.length * squares);
}
