/**
 * What NetClamp costs traffic it does not limit (the bench's `cost` section):
 *  - interleaved A/B loopback throughput: A = service running with rules loaded, none matching the
 *    iperf3 copy; B = service stopped (no programs attached). Order A B B A ... so drift hits both.
 *  - per-packet cost of each nc_ program from the kernel's run-time stats (kernel.bpf_stats_enabled=1
 *    only around the measured run, then restored).
 *  - socket creation cost: socket()+close() in a tight loop (python3), with and without the service.
 * This 2-core VM is noisy (+-20% run to run): the ratio is the median of the pairs' ratios.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { NetLab } from '../test/net/netlab.js';
import { runIperf } from '../test/net/iperf.js';
import { run } from '../test/net/exec.js';
import { ruleDraft, type NetClampService } from '../test/e2e/service.js';
import { formatRate, formatTable } from './table.js';

export interface ProgramCost {
  name: string;
  type: string;
  runCount: number;
  runTimeNs: number;
  nsPerRun: number | null;
}

export interface CostReport {
  abPairs: { withRulesBytesPerSec: number; withoutBytesPerSec: number; ratio: number }[];
  abMedianRatio: number | null;
  programs: ProgramCost[];
  /** Bytes iperf3 moved while the stats were on, for ns per MiB. */
  statsRunBytes: number;
  socketCreateUsWith: number | null;
  socketCreateUsWithout: number | null;
  rulesLoaded: number;
  /** nc_ programs of other NetClamp processes seen during the run (they also run on this traffic). */
  foreignPrograms: number;
  summary: string;
}

const BPF_STATS = '/proc/sys/kernel/bpf_stats_enabled';
const PAIRS = 6;
const AB_SECONDS = 3;
const SOCKETS = 20000;

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

interface BpftoolProg {
  id: number;
  name?: string;
  type: string;
  run_time_ns?: number;
  run_cnt?: number;
  pids?: { pid: number }[];
}

/** The service's own nc_ programs (by owning pid when bpftool reports it; otherwise every nc_ program). */
async function programStats(ownerPid: number | undefined): Promise<Map<number, BpftoolProg>> {
  const out = await run('bpftool', ['prog', 'show', '-j']);
  const programs = (JSON.parse(out.stdout) as BpftoolProg[]).filter((prog) => prog.name?.startsWith('nc_'));
  const owned = programs.filter((prog) => prog.pids?.some((entry) => entry.pid === ownerPid));
  return new Map((owned.length > 0 ? owned : programs).map((prog) => [prog.id, prog]));
}

async function foreignProgramCount(ownerPid: number | undefined): Promise<number> {
  const out = await run('bpftool', ['prog', 'show', '-j']);
  return (JSON.parse(out.stdout) as BpftoolProg[])
    .filter((prog) => prog.name?.startsWith('nc_') && !prog.pids?.some((entry) => entry.pid === ownerPid)).length;
}

async function socketCreateMicros(): Promise<number> {
  const script = `import socket,time\nn=${SOCKETS}\nt=time.perf_counter()\nfor _ in range(n):\n socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()\nprint((time.perf_counter()-t)/n*1e6)\n`;
  const out = await run('python3', ['-c', script], { timeoutMs: 60_000 });
  return Number(out.stdout.trim());
}

export async function runCostSection(lab: NetLab, service: NetClampService, appPath: string, plainPath: string): Promise<CostReport> {
  const path = await lab.loopbackPath();
  const server = await lab.startIperfServer(path);
  // Rules that match nothing in this run: a LIMIT and a BLOCK on the app copy (never started here) and
  // per-port rules for every app on ports nobody uses, so every packet walks a non-empty rule list.
  const drafts = [
    ruleDraft({ app_path: appPath, action: 'LIMIT', rate_limit_up_bytes_per_sec: 65536, rate_limit_down_bytes_per_sec: 65536 }),
    ruleDraft({ app_path: appPath, action: 'BLOCK' }),
  ];
  const created: string[] = [];
  for (const draft of drafts) created.push((await service.createRule(draft)).id);

  const throughput = async (): Promise<number> =>
    (await runIperf({ ns: path.clientNs, binary: plainPath, server, seconds: AB_SECONDS, omitSeconds: 1 })).goodputBytesPerSec;

  const abPairs: CostReport['abPairs'] = [];
  let socketCreateUsWith: number | null = null;
  let socketCreateUsWithout: number | null = null;
  const withSockets: number[] = [];
  const withoutSockets: number[] = [];
  for (let pair = 0; pair < PAIRS; pair++) {
    // Alternate which half runs first (A B, B A, ...) so a slow drift does not favour one side.
    const order = pair % 2 === 0 ? ['with', 'without'] : ['without', 'with'];
    const measured: Record<string, number> = {};
    for (const side of order) {
      if (side === 'without') await service.stop();
      measured[side] = await throughput();
      (side === 'with' ? withSockets : withoutSockets).push(await socketCreateMicros());
      if (side === 'without') await service.restart();
    }
    abPairs.push({ withRulesBytesPerSec: measured.with!, withoutBytesPerSec: measured.without!, ratio: measured.with! / measured.without! });
    console.error(`  cost A/B pair ${pair + 1}: with ${formatRate(measured.with!)} without ${formatRate(measured.without!)} ratio ${(measured.with! / measured.without!).toFixed(3)}`);
  }
  socketCreateUsWith = median(withSockets);
  socketCreateUsWithout = median(withoutSockets);

  // Per-program run time while a non-matching transfer runs.
  const previous = readFileSync(BPF_STATS, 'utf8').trim();
  let programs: ProgramCost[] = [];
  let statsRunBytes = 0;
  let statsRunSeconds = AB_SECONDS;
  let foreignPrograms = 0;
  try {
    writeFileSync(BPF_STATS, '1');
    const before = await programStats(service.pid);
    const result = await runIperf({ ns: path.clientNs, binary: plainPath, server, seconds: AB_SECONDS });
    statsRunBytes = result.receivedBytes;
    statsRunSeconds = result.seconds;
    const after = await programStats(service.pid);
    foreignPrograms = await foreignProgramCount(service.pid);
    programs = [...after.values()].map((prog) => {
      const start = before.get(prog.id);
      const runCount = (prog.run_cnt ?? 0) - (start?.run_cnt ?? 0);
      const runTimeNs = (prog.run_time_ns ?? 0) - (start?.run_time_ns ?? 0);
      return { name: prog.name ?? String(prog.id), type: prog.type, runCount, runTimeNs, nsPerRun: runCount > 0 ? runTimeNs / runCount : null };
    }).filter((prog) => prog.runCount > 0);
  } finally {
    writeFileSync(BPF_STATS, previous);
  }
  for (const id of created) await service.request('DELETE', `/rules/${id}`);
  server.stop();

  const ratios = abPairs.map((pair) => pair.ratio);
  const abMedianRatio = median(ratios);
  const mib = statsRunBytes / 1048576;
  const summary = [
    `cost (loopback, ${created.length} rules loaded, none matching):`,
    `  A/B throughput with/without NetClamp: median ratio ${abMedianRatio?.toFixed(3)} over ${PAIRS} interleaved pairs (${ratios.map((r) => r.toFixed(3)).join(', ')})`,
    `  socket()+close(): ${socketCreateUsWith?.toFixed(2)} us with NetClamp, ${socketCreateUsWithout?.toFixed(2)} us without (median of ${PAIRS}, ${SOCKETS} sockets each)`,
    `  bpf run-time stats over one ${statsRunSeconds.toFixed(0)} s transfer of ${formatRate(statsRunBytes / statsRunSeconds)}` +
      (foreignPrograms > 0 ? ` (${foreignPrograms} nc_ programs of other NetClamp processes were attached too)` : ''),
    formatTable(['program', 'type', 'runs', 'ns/run', 'ns per MiB moved', '% of one core'], programs.map((prog) => [
      prog.name, prog.type, String(prog.runCount), prog.nsPerRun?.toFixed(0) ?? '-', mib > 0 ? (prog.runTimeNs / mib).toFixed(0) : '-',
      (prog.runTimeNs / (statsRunSeconds * 1e9) * 100).toFixed(2),
    ])).split('\n').map((line) => '  ' + line).join('\n'),
  ].join('\n');
  return { abPairs, abMedianRatio, programs, statsRunBytes, socketCreateUsWith, socketCreateUsWithout, rulesLoaded: created.length, foreignPrograms, summary };
}
