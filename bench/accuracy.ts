/**
 * `npm run bench`: NetClamp, trickle and tc HTB on the same workloads in one run (root only).
 *
 * Sections (--sections, default all): `accuracy` (TCP, path x direction x limit x connections, each cell
 * run under each shaper back to back), `udp` (an iperf3 -u sender at twice the limit; goodput and the
 * rule's counters against iperf3's), `cost` (bench/cost.ts). Prints a table and writes
 * bench/results/bench-<timestamp>.json.
 *
 * Flags: --quick | --paths loopback,veth,rtt20,rtt100 --directions upload,download
 * --limits 64K,1M,16M,128M,1G --conns 1,8 --shapers netclamp,trickle,htb --seconds N --max-minutes N
 * --low-rate-seconds N (measured seconds at <= 128 KiB/s, default 16) --udp-paths loopback,veth,rtt20.
 * A cell whose limit the bare path cannot carry (baseline < 1.1x limit) is listed as not carried. Every
 * iperf3 run has a timeout and the whole run stops starting cells after --max-minutes; namespaces,
 * qdiscs, the relay and the service are removed in `finally` and by the exit hooks.
 */
import { parseArgs } from 'node:util';
import { NetLab, type IperfServer, type NetPath } from '../test/net/netlab.js';
import { copyExecutable, runIperf, type IperfResult } from '../test/net/iperf.js';
import { run, sleep } from '../test/net/exec.js';
import { runBench, writeBenchResult } from './results.js';
import { NetClampService } from '../test/e2e/service.js';
import {
  HtbShaper, NetClampShaper, TCP_FRAME_OVERHEAD, TrickleShaper, UDP_FRAME_OVERHEAD, jainIndex,
  type Direction, type Shaper, type ShaperName,
} from './shapers.js';
import { fixed, formatRate, formatTable, parseRate } from './table.js';
import { runCostSection, type CostReport } from './cost.js';

type BenchPath = 'loopback' | 'veth' | 'rtt20' | 'rtt100';

const UDP_LENGTH = 1400;
/** Measured seconds for limits <= 128 KiB/s (--low-rate-seconds). */
let lowRateSeconds = 16;

const TARGET = { goodput: { min: 0.97, max: 1.02 }, wire: { min: 0.99, max: 1.01 }, udp: { min: 0.98, max: 1.02 } };

interface Run {
  shaper: ShaperName;
  goodputBytesPerSec: number | null;
  ratio: number | null;
  /** HTB only: frame bytes on the wire / limit (HTB counts frames, not payload). */
  wireRatio: number | null;
  fairness: number | null;
  /** The client's CPU use (iperf3 host_total, % of one core). */
  clientCpuPercent: number | null;
  /** UDP: shaper-counted bytes / bytes iperf3 says arrived. */
  counterRatio?: number | null;
  sentBytesPerSec?: number | null;
  error?: string;
}

interface Cell {
  kind: 'tcp' | 'udp';
  path: BenchPath;
  direction: Direction;
  limitBytesPerSec: number;
  connections: number;
  baselineBytesPerSec: number | null;
  carried: boolean;
  runs: Run[];
}

const PRESETS = {
  quick: { paths: 'loopback,rtt20', directions: 'upload,download', limits: '1M', conns: '1,8', seconds: '4', udp: 'loopback' },
  full: { paths: 'loopback,veth,rtt20,rtt100', directions: 'upload,download', limits: '64K,1M,16M,128M,1G', conns: '1,8', seconds: '8', udp: 'loopback,veth,rtt20' },
};

function list(value: string): string[] {
  return value.split(',').map((item) => item.trim()).filter(Boolean);
}

async function ensureTrickle(): Promise<boolean> {
  if ((await run('sh', ['-c', 'command -v trickle'], { allowFailure: true })).code === 0) return true;
  console.error('bench: installing trickle (apt-get install -y trickle)');
  const install = await run('apt-get', ['install', '-y', 'trickle'], { allowFailure: true, timeoutMs: 300_000 });
  return install.code === 0;
}

async function createBenchPath(lab: NetLab, kind: BenchPath): Promise<NetPath> {
  if (kind === 'loopback') return lab.loopbackPath();
  if (kind === 'veth') return lab.vethPath();
  return lab.relayPath({ oneWayDelayMs: kind === 'rtt20' ? 10 : 50 });
}

/** Per-connection received bytes from iperf3's JSON (for the fairness index). */
function perStreamBytes(result: IperfResult): number[] {
  const raw = result.raw as { end?: { streams?: { receiver?: { bytes?: number } }[] } };
  return (raw.end?.streams ?? []).map((stream) => stream.receiver?.bytes ?? 0);
}

function clientCpu(result: IperfResult): number | null {
  const raw = result.raw as { end?: { cpu_utilization_percent?: { host_total?: number } } };
  return raw.end?.cpu_utilization_percent?.host_total ?? null;
}

function secondsFor(limit: number, base: number, lowRateSeconds: number): { seconds: number; omit: number } {
  // One bucket or HTB burst (>= 64 KiB) released at once is a whole second at 64 KiB/s: run low rates longer.
  if (limit <= 131072) return { seconds: Math.max(base, lowRateSeconds), omit: 2 };
  if (limit <= 1048576) return { seconds: Math.max(base, 8), omit: 1 };
  return { seconds: base, omit: 1 };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      sections: { type: 'string', default: 'accuracy,udp,cost' },
      paths: { type: 'string' },
      directions: { type: 'string' },
      limits: { type: 'string' },
      conns: { type: 'string' },
      shapers: { type: 'string', default: 'netclamp,trickle,htb' },
      seconds: { type: 'string' },
      'udp-paths': { type: 'string' },
      'max-minutes': { type: 'string', default: '90' },
      'low-rate-seconds': { type: 'string', default: '16' },
    },
  });
  if (process.getuid?.() !== 0) {
    console.error('bench: needs root (network namespaces, BPF, tc)');
    return 2;
  }
  const preset = values.quick ? PRESETS.quick : PRESETS.full;
  const sections = new Set(list(values.sections));
  const pathKinds = list(values.paths ?? preset.paths) as BenchPath[];
  const directions = list(values.directions ?? preset.directions) as Direction[];
  const limits = list(values.limits ?? preset.limits).map(parseRate);
  const connections = list(values.conns ?? preset.conns).map(Number);
  const shaperNames = list(values.shapers) as ShaperName[];
  const baseSeconds = Number(values.seconds ?? preset.seconds);
  const udpPaths = list(values['udp-paths'] ?? preset.udp) as BenchPath[];
  lowRateSeconds = Number(values['low-rate-seconds']);
  const deadline = Date.now() + Number(values['max-minutes']) * 60_000;
  const started = new Date();

  if (shaperNames.includes('trickle') && !(await ensureTrickle())) {
    console.error('bench: trickle unavailable; its column stays empty');
    shaperNames.splice(shaperNames.indexOf('trickle'), 1);
  }

  const lab = new NetLab();
  const app = copyExecutable('/usr/bin/iperf3', 'nc-bench-app-');
  // A second copy no rule matches: trickle and HTB run it, so NetClamp never shapes their cells.
  const plain = copyExecutable('/usr/bin/iperf3', 'nc-bench-plain-');
  const cells: Cell[] = [];
  let cost: CostReport | null = null;
  let service: NetClampService | null = null;
  const shapers: Shaper[] = [];
  try {
    const paths = new Map<BenchPath, { path: NetPath; server: IperfServer }>();
    for (const kind of new Set([...(sections.has('accuracy') ? pathKinds : []), ...(sections.has('udp') ? udpPaths : [])])) {
      const path = await createBenchPath(lab, kind);
      paths.set(kind, { path, server: await lab.startIperfServer(path) });
    }

    const baselines = new Map<string, number | null>();
    const baseline = async (kind: BenchPath, direction: Direction, conns: number): Promise<number | null> => {
      const key = `${kind}/${direction}/${conns}`;
      if (!baselines.has(key)) {
        const entry = paths.get(kind)!;
        try {
          const options = { ns: entry.path.clientNs, binary: plain.path, server: entry.server, seconds: 3, omitSeconds: 1, parallel: conns, reverse: direction === 'download' };
          const result = await runIperf(options).catch(async (error: Error) => {
            if (!/server is busy/.test(error.message)) throw error;
            await sleep(3000);
            return runIperf(options);
          });
          baselines.set(key, result.goodputBytesPerSec);
        } catch (error) {
          console.error(`  baseline ${key}: ${(error as Error).message}`);
          entry.server.stop();
          entry.server = await lab.startIperfServer(entry.path);
          baselines.set(key, null);
        }
        console.error(`  baseline ${key}: ${formatRate(baselines.get(key) ?? 0)}`);
      }
      return baselines.get(key)!;
    };

    if (sections.has('accuracy') || sections.has('udp') || sections.has('cost')) {
      service = await NetClampService.start();
    }
    for (const name of shaperNames) {
      if (name === 'netclamp') shapers.push(new NetClampShaper(service!, app.path));
      if (name === 'trickle') shapers.push(new TrickleShaper());
      if (name === 'htb') shapers.push(new HtbShaper());
    }

    if (sections.has('accuracy')) {
      for (const kind of pathKinds) {
        const entry = paths.get(kind)!;
        for (const direction of directions) {
          for (const limit of limits) {
            for (const conns of connections) {
              const base = await baseline(kind, direction, conns);
              const cell: Cell = { kind: 'tcp', path: kind, direction, limitBytesPerSec: limit, connections: conns, baselineBytesPerSec: base, carried: base !== null && base >= 1.1 * limit, runs: [] };
              cells.push(cell);
              if (!cell.carried) {
                console.error(`  ${describe(cell)}: not carried by the bare path (${formatRate(base ?? 0)})`);
                continue;
              }
              for (const shaper of shapers) {
                if (Date.now() > deadline) {
                  cell.runs.push(emptyRun(shaper.name, 'skipped: --max-minutes reached'));
                  continue;
                }
                const outcome = await measureTcp(lab, entry, shaper, cell, baseSeconds, app.path, plain.path);
                cell.runs.push(outcome);
                console.error(`  ${describe(cell)} ${shaper.name}: ${describeRun(outcome)}`);
              }
            }
          }
        }
      }
    }

    if (sections.has('udp')) {
      for (const kind of udpPaths) {
        const entry = paths.get(kind)!;
        for (const direction of ['upload', 'download'] as Direction[]) {
          const limit = 1048576;
          const cell: Cell = { kind: 'udp', path: kind, direction, limitBytesPerSec: limit, connections: 1, baselineBytesPerSec: null, carried: true, runs: [] };
          cells.push(cell);
          for (const shaper of shapers) {
            if (Date.now() > deadline) {
              cell.runs.push(emptyRun(shaper.name, 'skipped: --max-minutes reached'));
              continue;
            }
            const outcome = await measureUdp(lab, entry, shaper, cell, app.path, plain.path);
            cell.runs.push(outcome);
            console.error(`  ${describe(cell)} ${shaper.name}: ${describeRun(outcome)}`);
          }
        }
      }
    }

    for (const shaper of shapers) await shaper.dispose();
    if (sections.has('cost') && service && Date.now() < deadline) {
      cost = await runCostSection(lab, service, app.path, plain.path);
    }
  } finally {
    await service?.dispose();
    lab.cleanup();
    app.remove();
    plain.remove();
  }

  const table = renderTable(cells, shaperNames);
  console.log('\n' + table);
  if (cost) console.log('\n' + cost.summary);
  const file = await writeBenchResult('bench', started, { target: TARGET, cells, cost, table });
  console.log(`\nwrote ${file}`);
  return 0;
}

function emptyRun(shaper: ShaperName, error: string): Run {
  return { shaper, goodputBytesPerSec: null, ratio: null, wireRatio: null, fairness: null, clientCpuPercent: null, error };
}

async function measureTcp(
  lab: NetLab, entry: { path: NetPath; server: IperfServer }, shaper: Shaper, cell: Cell, baseSeconds: number, appPath: string, plainPath: string,
): Promise<Run> {
  const outcome = emptyRun(shaper.name, '');
  delete outcome.error;
  const { seconds, omit } = secondsFor(cell.limitBytesPerSec, baseSeconds, lowRateSeconds);
  let prepared: Awaited<ReturnType<Shaper['prepare']>> | null = null;
  try {
    prepared = await shaper.prepare({ path: entry.path, direction: cell.direction, limitBytesPerSec: cell.limitBytesPerSec, serverPort: entry.server.port, protocol: 'tcp' });
    const options = {
      ns: entry.path.clientNs, binary: prepared.binary === 'app' ? appPath : plainPath, prefix: prepared.prefix,
      server: entry.server, seconds, omitSeconds: omit, parallel: cell.connections, reverse: cell.direction === 'download',
    };
    // Over a delayed path the server may still be closing the previous test: retry once after it has.
    const result = await runIperf(options).catch(async (error: Error) => {
      if (!/server is busy/.test(error.message)) throw error;
      await sleep(3000);
      return runIperf(options);
    });
    outcome.goodputBytesPerSec = result.goodputBytesPerSec;
    outcome.ratio = result.goodputBytesPerSec / cell.limitBytesPerSec;
    outcome.fairness = jainIndex(perStreamBytes(result));
    outcome.clientCpuPercent = clientCpu(result);
    if (shaper.name === 'htb') {
      const counted = await prepared.counters();
      if (counted?.packets && counted.bytes > counted.packets * TCP_FRAME_OVERHEAD) {
        // Frame bytes per payload byte, from the class's own byte and (GSO-segment) packet counts.
        outcome.wireRatio = outcome.ratio * (counted.bytes / (counted.bytes - counted.packets * TCP_FRAME_OVERHEAD));
      }
    }
  } catch (error) {
    outcome.error = (error as Error).message.slice(0, 300);
    entry.server.stop();
    entry.server = await lab.startIperfServer(entry.path);
  } finally {
    await prepared?.undo();
  }
  return outcome;
}

/** iperf3 -u at twice the limit, 1400-byte datagrams, no omitted seconds so counters cover the same run. */
async function measureUdp(
  lab: NetLab, entry: { path: NetPath; server: IperfServer }, shaper: Shaper, cell: Cell, appPath: string, plainPath: string,
): Promise<Run> {
  const outcome = emptyRun(shaper.name, '');
  delete outcome.error;
  let prepared: Awaited<ReturnType<Shaper['prepare']>> | null = null;
  try {
    prepared = await shaper.prepare({ path: entry.path, direction: cell.direction, limitBytesPerSec: cell.limitBytesPerSec, serverPort: entry.server.port, protocol: 'udp' });
    const result = await runIperf({
      ns: entry.path.clientNs, binary: prepared.binary === 'app' ? appPath : plainPath, prefix: prepared.prefix,
      server: entry.server, seconds: 10, reverse: cell.direction === 'download',
      udpBytesPerSec: 2 * cell.limitBytesPerSec, udpLength: UDP_LENGTH,
    });
    outcome.goodputBytesPerSec = result.goodputBytesPerSec;
    outcome.sentBytesPerSec = result.sentBytes / result.seconds;
    outcome.ratio = result.goodputBytesPerSec / cell.limitBytesPerSec;
    outcome.clientCpuPercent = clientCpu(result);
    const counted = await prepared.counters();
    if (counted && result.receivedBytes > 0) {
      if (shaper.name === 'htb' && counted.packets) {
        outcome.wireRatio = (counted.bytes / result.seconds) / cell.limitBytesPerSec;
        // HTB counts frames: compare payload (frame minus headers) with what arrived.
        outcome.counterRatio = (counted.bytes - counted.packets * UDP_FRAME_OVERHEAD) / result.receivedBytes;
      } else {
        // NetClamp counts IP packet bytes (cgroup_skb's skb->len): compare with the datagrams' IP size.
        const ipBytesReceived = result.receivedBytes * ((UDP_LENGTH + UDP_FRAME_OVERHEAD - 14) / UDP_LENGTH);
        outcome.counterRatio = counted.bytes / ipBytesReceived;
      }
    }
  } catch (error) {
    outcome.error = (error as Error).message.slice(0, 300);
    entry.server.stop();
    entry.server = await lab.startIperfServer(entry.path);
  } finally {
    await prepared?.undo();
  }
  return outcome;
}

function describe(cell: Cell): string {
  return `${cell.kind} ${cell.path} ${cell.direction} ${formatRate(cell.limitBytesPerSec)} x${cell.connections}`;
}

function describeRun(outcome: Run): string {
  if (outcome.error) return `ERROR ${outcome.error}`;
  const parts = [`${formatRate(outcome.goodputBytesPerSec ?? 0)} ratio ${fixed(outcome.ratio)}`];
  if (outcome.wireRatio !== null) parts.push(`wire ${fixed(outcome.wireRatio)}`);
  if (outcome.fairness !== null) parts.push(`jain ${fixed(outcome.fairness)}`);
  if (outcome.counterRatio !== undefined) parts.push(`counted/received ${fixed(outcome.counterRatio)}`);
  if (outcome.clientCpuPercent !== null) parts.push(`cpu ${fixed(outcome.clientCpuPercent, 1)}%`);
  return parts.join(', ');
}

/** One row per cell: each shaper's ratio (HTB as goodput/wire), fairness and client CPU per shaper. */
export function renderTable(cells: Cell[], shaperNames: ShaperName[]): string {
  const header = ['scenario', 'limit', ...shaperNames.map((name) => `${name} ratio`), 'fairness (Jain)', 'cost: client cpu %'];
  const rows = cells.map((cell) => {
    const scenario = `${cell.kind} ${cell.path} ${cell.direction} x${cell.connections}`;
    if (!cell.carried) {
      return [scenario, formatRate(cell.limitBytesPerSec), ...shaperNames.map(() => '-'), `path carries ${formatRate(cell.baselineBytesPerSec ?? 0)}`, '-'];
    }
    const byName = new Map(cell.runs.map((outcome) => [outcome.shaper, outcome]));
    const ratios = shaperNames.map((name) => {
      const outcome = byName.get(name);
      if (!outcome) return '-';
      if (outcome.error) return outcome.error.startsWith('skipped') ? 'skipped' : 'error';
      let text = fixed(outcome.ratio);
      if (outcome.wireRatio !== null) text += ` (wire ${fixed(outcome.wireRatio)})`;
      if (outcome.counterRatio !== undefined && outcome.counterRatio !== null) text += ` [counted ${fixed(outcome.counterRatio)}]`;
      return text + (inTarget(cell, outcome) ? '' : ' !');
    });
    const fairness = cell.connections > 1 ? shaperNames.map((name) => fixed(byName.get(name)?.fairness ?? null, 2)).join(' / ') : '-';
    const cpu = shaperNames.map((name) => fixed(byName.get(name)?.clientCpuPercent ?? null, 1)).join(' / ');
    return [scenario, formatRate(cell.limitBytesPerSec), ...ratios, fairness, cpu];
  });
  return formatTable(header, rows) + `\n(ratio = goodput / limit; "!" = outside the goal: goodput [${TARGET.goodput.min}, ${TARGET.goodput.max}], HTB wire [${TARGET.wire.min}, ${TARGET.wire.max}], UDP [${TARGET.udp.min}, ${TARGET.udp.max}]; fairness and cpu listed as ${shaperNames.join(' / ')})`;
}

function inTarget(cell: Cell, outcome: Run): boolean {
  if (outcome.ratio === null) return false;
  if (cell.kind === 'udp') {
    const value = outcome.wireRatio ?? outcome.ratio;
    return outcome.wireRatio !== null
      ? value >= TARGET.wire.min && value <= TARGET.wire.max
      : value >= TARGET.udp.min && value <= TARGET.udp.max;
  }
  if (outcome.wireRatio !== null) return outcome.wireRatio >= TARGET.wire.min && outcome.wireRatio <= TARGET.wire.max;
  return outcome.ratio >= TARGET.goodput.min && outcome.ratio <= TARGET.goodput.max;
}

runBench(main);
