/**
 * `npm run bench:responsive` (root): how fast a limit change reaches a running transfer.
 *
 * Per trial: one PER_APP LIMIT rule on a copy of python3 at the old rate, a TCP transfer under it
 * (bench/rate-probe.ts: the receiver reports its byte count every 10 ms), PUT /rules/{id} with the new
 * rate after --pre seconds, and --post seconds more of samples. Both changes (raise, lower), --repeats
 * times, for each of --cells (path:direction; default upload on veth, upload and download on the 20 ms
 * relay: download on veth and loopback is still policed and collapses, see the accuracy table), between
 * --low and --high (default 2M and 8M).
 *
 * Figures per trial (time 0 = the PUT is sent):
 *  - reaction: the first moment from which the 100 ms trailing rate stays past the midpoint of old and
 *    new limit for 200 ms;
 *  - settle: the earliest sample from which the transfer follows the new limit to the end of the run,
 *    i.e. for every later sample |bytes - limit x elapsed| <= one burst + 10% of limit x elapsed, with at
 *    least 1 s left to check (goal <= 200 ms); the 10% keeps steady-state accuracy (reported apart, as
 *    rate/limit before and after) from passing for slowness;
 *  - longest pause: the longest time after the PUT in which no byte arrived;
 *  - worst second above the limit: the largest (bytes in a 1 s window - 1 s of the new limit) over the
 *    windows that start at or after the PUT, in bytes and in bursts (goal <= 1 burst). When lowering,
 *    the old limit still held until the 201; that time's excess is deducted.
 * BURST (the yardstick, not a data-plane setting): max(64 KiB, 40 ms of the new limit); 64 KiB is one
 * GSO skb, 40 ms the ingress bucket's depth.
 */
import { parseArgs } from 'node:util';
import { NetLab, type NetPath } from '../test/net/netlab.js';
import { copyExecutable } from '../test/net/iperf.js';
import { run, sleep } from '../test/net/exec.js';
import { runBench, writeBenchResult } from './results.js';
import { NetClampService, ruleDraft, type StoredRule } from '../test/e2e/service.js';
import { startRateProbe } from './rate-probe.js';
import {
  SETTLE_TOLERANCE, longestPauseSeconds, rateBetween, reactionSeconds, settleSeconds, toPoints, worstSecondExcess,
} from './rate-analysis.js';
import type { Direction } from './shapers.js';
import { fixed, formatRate, formatTable, parseRate, quantile } from './table.js';

type ResponsivePath = 'veth' | 'rtt20' | 'loopback';
type Change = 'raise' | 'lower';

const TARGET = { settleMs: 200, worstSecondBursts: 1 };
const WARMUP_S = 1;
const DEFAULT_CELLS = 'veth:upload,rtt20:upload,rtt20:download';

interface Trial {
  path: ResponsivePath;
  direction: Direction;
  change: Change;
  fromBytesPerSec: number;
  toBytesPerSec: number;
  putMs: number;
  reactionMs: number | null;
  settleMs: number | null;
  /** Longest time after the PUT in which not one byte arrived. */
  longestPauseMs: number;
  worstSecondExcessBytes: number;
  burstBytes: number;
  worstSecondBursts: number;
  ratioBefore: number | null;
  ratioAfter: number | null;
  samples: number;
  /** The receiver's samples: [ms since the PUT, bytes since the connection opened]. */
  series: [number, number][];
  error?: string;
}

function burstFor(limit: number): number {
  return Math.max(65536, Math.round(limit * 0.04));
}

async function createPath(lab: NetLab, kind: ResponsivePath): Promise<NetPath> {
  if (kind === 'loopback') return lab.loopbackPath();
  if (kind === 'veth') return lab.vethPath();
  return lab.relayPath({ oneWayDelayMs: 10 });
}

function draftFor(appPath: string, direction: Direction, limit: number): ReturnType<typeof ruleDraft> {
  return ruleDraft({
    app_path: appPath,
    action: 'LIMIT',
    rate_limit_up_bytes_per_sec: direction === 'upload' ? limit : null,
    rate_limit_down_bytes_per_sec: direction === 'download' ? limit : null,
  });
}

async function runTrial(
  lab: NetLab, service: NetClampService, rule: StoredRule, appPath: string, path: NetPath, kind: ResponsivePath,
  direction: Direction, change: Change, low: number, high: number, port: number, preSeconds: number, postSeconds: number,
): Promise<Trial> {
  const [from, to] = change === 'raise' ? [low, high] : [high, low];
  const trial: Trial = {
    path: kind, direction, change, fromBytesPerSec: from, toBytesPerSec: to, putMs: 0, reactionMs: null, settleMs: null, longestPauseMs: 0,
    worstSecondExcessBytes: 0, burstBytes: burstFor(to), worstSecondBursts: 0, ratioBefore: null, ratioAfter: null, samples: 0, series: [],
  };
  await service.updateRule(rule.id, draftFor(appPath, direction, from));
  const probe = await startRateProbe(lab, path, direction, appPath, port);
  try {
    await sleep(preSeconds * 1000);
    const sent = process.hrtime.bigint();
    const updated = await service.updateRule(rule.id, draftFor(appPath, direction, to));
    const acknowledged = process.hrtime.bigint();
    if (updated.sync_state !== 'SYNCED') throw new Error(`rule ${updated.sync_state}: ${updated.sync_error}`);
    await sleep(postSeconds * 1000);
    const points = toPoints(probe.samples, sent);
    trial.samples = points.length;
    trial.series = points.map((point) => [Math.round(point.t * 10000) / 10, point.bytes]);
    trial.putMs = Number(acknowledged - sent) / 1e6;
    const reaction = reactionSeconds(points, from, to);
    const settle = settleSeconds(points, to, trial.burstBytes);
    trial.reactionMs = reaction === null ? null : reaction * 1000;
    trial.settleMs = settle === null ? null : settle * 1000;
    trial.longestPauseMs = longestPauseSeconds(points) * 1000;
    trial.worstSecondExcessBytes = worstSecondExcess(points, from, to, change === 'lower' ? trial.putMs / 1000 : 0);
    trial.worstSecondBursts = trial.worstSecondExcessBytes / trial.burstBytes;
    const before = rateBetween(points, -Math.min(2, preSeconds - WARMUP_S), 0);
    const after = rateBetween(points, postSeconds - 1.5, postSeconds);
    trial.ratioBefore = before === null ? null : before / from;
    trial.ratioAfter = after === null ? null : after / to;
  } catch (error) {
    trial.error = (error as Error).message.slice(0, 300);
  } finally {
    probe.stop();
  }
  return trial;
}

function list(value: string): string[] {
  return value.split(',').map((item) => item.trim()).filter(Boolean);
}

function msText(values: (number | null)[]): string {
  if (values.some((value) => value === null)) {
    const settled = values.filter((value): value is number => value !== null);
    return `reached in ${settled.length}/${values.length}` + (settled.length ? `, max ${fixed(Math.max(...settled), 0)}` : '');
  }
  const numbers = values as number[];
  return `${fixed(quantile(numbers, 0.5), 0)} / ${fixed(Math.max(...numbers), 0)}`;
}

function renderResponsivenessTable(trials: readonly Trial[]): { header: string[]; rows: string[][] } {
  const groups = new Map<string, Trial[]>();
  for (const trial of trials) {
    const key = `${trial.path} ${trial.direction} ${trial.change}`;
    groups.set(key, [...(groups.get(key) ?? []), trial]);
  }
  const header = ['path', 'direction', 'change', 'runs', 'PUT->201 ms (median / max)', 'reaction ms', 'settle ms (goal <= 200)', 'longest pause ms',
    'worst 1 s above limit (bursts, goal <= 1)', 'rate/limit before / after'];
  const rows = [...groups.values()].map((group) => {
    const ok = group.filter((trial) => !trial.error);
    const first = group[0]!;
    const worst = ok.reduce((max, trial) => Math.max(max, trial.worstSecondBursts), -Infinity);
    const worstTrial = ok.find((trial) => trial.worstSecondBursts === worst);
    return [
      first.path, first.direction, `${formatRate(first.fromBytesPerSec)} -> ${formatRate(first.toBytesPerSec)}`,
      `${ok.length}` + (ok.length < group.length ? ` (${group.length - ok.length} failed)` : ''),
      ok.length ? msText(ok.map((trial) => trial.putMs)) : '-',
      ok.length ? msText(ok.map((trial) => trial.reactionMs)) : '-',
      ok.length ? msText(ok.map((trial) => trial.settleMs)) : '-',
      ok.length ? msText(ok.map((trial) => trial.longestPauseMs)) : '-',
      worstTrial ? (worst <= 0 ? `none (${fixed(worst, 2)})` : `${fixed(worst, 2)} (${formatRate(worstTrial.worstSecondExcessBytes).replace('/s', '')} of ${formatRate(worstTrial.burstBytes).replace('/s', '')})`) : '-',
      ok.length ? `${fixed(quantile(ok.map((trial) => trial.ratioBefore ?? NaN), 0.5))} / ${fixed(quantile(ok.map((trial) => trial.ratioAfter ?? NaN), 0.5))}` : '-',
    ];
  });
  return { header, rows };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      cells: { type: 'string', default: DEFAULT_CELLS },
      low: { type: 'string', default: '2M' },
      high: { type: 'string', default: '8M' },
      repeats: { type: 'string', default: '3' },
      pre: { type: 'string', default: '3' },
      post: { type: 'string', default: '3' },
    },
  });
  if (process.getuid?.() !== 0) {
    console.error('bench: needs root (network namespaces, BPF)');
    return 2;
  }
  const cells = list(values.cells).map((cell) => {
    const [kind, direction] = cell.split(':') as [ResponsivePath, Direction];
    if (!['veth', 'rtt20', 'loopback'].includes(kind) || !['upload', 'download'].includes(direction)) throw new Error(`not a cell (path:direction): ${cell}`);
    return { kind, direction };
  });
  const low = parseRate(values.low);
  const high = parseRate(values.high);
  const repeats = Number(values.repeats);
  const preSeconds = Number(values.pre);
  const postSeconds = Number(values.post);
  const started = new Date();

  const lab = new NetLab();
  const app = copyExecutable('/usr/bin/python3', 'nc-bench-python-');
  let service: NetClampService | null = null;
  const trials: Trial[] = [];
  let congestionControl = '';
  try {
    service = await NetClampService.start();
    const rule = await service.createRule(draftFor(app.path, 'upload', low));
    let port = 6201;
    const paths = new Map<ResponsivePath, NetPath>();
    for (const { kind, direction } of cells) {
      if (!paths.has(kind)) paths.set(kind, await createPath(lab, kind));
      const path = paths.get(kind)!;
      congestionControl ||= (await run('ip', ['netns', 'exec', path.clientNs, 'sysctl', '-n', 'net.ipv4.tcp_congestion_control'])).stdout.trim();
      for (let repeat = 0; repeat < repeats; repeat++) {
        for (const change of ['raise', 'lower'] as Change[]) {
          const trial = await runTrial(lab, service, rule, app.path, path, kind, direction, change, low, high, port++, preSeconds, postSeconds);
          trials.push(trial);
          console.error(`  ${kind} ${direction} ${change}: ` + (trial.error ? `ERROR ${trial.error}` :
            `PUT ${fixed(trial.putMs, 1)} ms, reaction ${fixed(trial.reactionMs, 0)} ms, settle ${fixed(trial.settleMs, 0)} ms, pause ${fixed(trial.longestPauseMs, 0)} ms, ` +
            `worst second ${fixed(trial.worstSecondBursts, 2)} bursts, before ${fixed(trial.ratioBefore)} after ${fixed(trial.ratioAfter)}`));
        }
      }
    }
  } finally {
    await service?.dispose();
    lab.cleanup();
    app.remove();
  }

  const { header, rows } = renderResponsivenessTable(trials);
  const table = formatTable(header, rows);
  console.log('\n' + table);
  console.log(`(time 0 = PUT sent; settle = follows the new limit within one burst + ${SETTLE_TOLERANCE * 100}% from then on; burst = max(64 KiB, 40 ms of the new limit); tcp ${congestionControl})`);
  const file = await writeBenchResult('responsive', started, { target: TARGET, congestionControl, trials, table });
  console.log(`\nwrote ${file}`);
  return 0;
}

runBench(main);
