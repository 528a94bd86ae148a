/**
 * Other traffic shapers and filters on a Linux machine, for /status `competing_shapers`:
 * - qdiscs other than the kernel's defaults, at the root or as ingress/clsact (`tc -j qdisc show`), except
 *   on NetClamp's own download queue devices;
 * - socket/skb BPF programs at the cgroup v2 root that are not ours (`bpftool -j cgroup show`);
 * - trickle and similar user-space shapers (process names, or LD_PRELOAD of their libraries).
 * Each probe that cannot run (tool missing, no permission) contributes nothing rather than failing.
 * Results are cached briefly: /status may be polled every second and a /proc walk is not free.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import type { CompetingShaper } from '../engine/engine.js';

// What a stock kernel puts on interfaces by itself (the configured default_qdisc is added at run time).
const DEFAULT_QDISCS = new Set(['noqueue', 'pfifo_fast', 'mq', 'fq_codel', 'noop']);
// Cgroup hooks that see or steer sockets and packets; device/sysctl programs shape nothing.
const TRAFFIC_ATTACH_TYPES = /(ingress|egress|sock_create|sock_ops|sock_release|connect|sendmsg|recvmsg|bind|getpeername|getsockname|sockopt)/;
const SHAPER_COMMANDS = new Set(['trickle', 'trickled', 'wondershaper', 'netlimiter', 'pv']);
const SHAPER_PRELOADS = /lib(trickle|trickle-overload|netlimit)[^ :]*\.so/;
const OUR_PROGRAM_PREFIX = 'nc_';
// NetClamp's own download queue devices (binding/src/linux: IFB + HTB, named after the service's pid).
const OUR_QUEUE_DEVICE = /^nc-q\d+$/;
const CACHE_MS = 2000;

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 2000, maxBuffer: 4 * 1024 * 1024 }, (error, stdout) => resolve(error ? '' : stdout));
  });
}

function parseJsonArray(text: string): Array<Record<string, unknown>> {
  try {
    const parsed: unknown = JSON.parse(text);
    return Array.isArray(parsed) ? parsed as Array<Record<string, unknown>> : [];
  } catch {
    return [];
  }
}

export async function qdiscShapers(tcJson?: string, defaultQdisc?: string): Promise<CompetingShaper[]> {
  const text = tcJson ?? await run('tc', ['-j', 'qdisc', 'show']);
  const configured = defaultQdisc ?? (await fs.readFile('/proc/sys/net/core/default_qdisc', 'utf8').catch(() => '')).trim();
  const found: CompetingShaper[] = [];
  for (const qdisc of parseJsonArray(text)) {
    const kind = String(qdisc.kind ?? '');
    const parent = String(qdisc.parent ?? '');
    const atRoot = qdisc.root === true || parent === '' || kind === 'ingress' || kind === 'clsact';
    if (!atRoot || DEFAULT_QDISCS.has(kind) || kind === configured || OUR_QUEUE_DEVICE.test(String(qdisc.dev ?? ''))) continue;
    found.push({ name: `qdisc ${kind}`, detail: `${kind} qdisc on ${String(qdisc.dev ?? '?')} (handle ${String(qdisc.handle ?? '?')})` });
  }
  return found;
}

export async function cgroupProgramShapers(cgroupRoot: string, bpftoolJson?: string): Promise<CompetingShaper[]> {
  const text = bpftoolJson ?? await run('bpftool', ['-j', 'cgroup', 'show', cgroupRoot]);
  const found: CompetingShaper[] = [];
  for (const program of parseJsonArray(text)) {
    const name = String(program.name ?? '');
    const attachType = String(program.attach_type ?? '');
    if (name.startsWith(OUR_PROGRAM_PREFIX) || !TRAFFIC_ATTACH_TYPES.test(attachType)) continue;
    found.push({ name: `bpf ${name || `id ${String(program.id)}`}`, detail: `cgroup BPF program id ${String(program.id)} (${attachType}) at ${cgroupRoot}` });
  }
  return found;
}

export async function processShapers(procRoot = '/proc'): Promise<CompetingShaper[]> {
  const found: CompetingShaper[] = [];
  const entries = await fs.readdir(procRoot).catch(() => [] as string[]);
  await Promise.all(entries.filter((entry) => /^\d+$/.test(entry)).map(async (pid) => {
    const comm = (await fs.readFile(`${procRoot}/${pid}/comm`, 'utf8').catch(() => '')).trim();
    if (SHAPER_COMMANDS.has(comm)) {
      found.push({ name: comm, detail: `process ${pid} (${comm})` });
      return;
    }
    const environ = await fs.readFile(`${procRoot}/${pid}/environ`, 'latin1').catch(() => '');
    const preload = environ.split('\0').find((variable) => variable.startsWith('LD_PRELOAD='));
    const match = preload?.match(SHAPER_PRELOADS);
    if (match) found.push({ name: match[1]!, detail: `process ${pid} (${comm}) preloads ${match[0]}` });
  }));
  return found.sort((a, b) => a.detail.localeCompare(b.detail));
}

async function cgroup2Root(): Promise<string | null> {
  const mountinfo = await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  for (const line of mountinfo.split('\n')) {
    const [before, after] = line.split(' - ');
    if (after?.startsWith('cgroup2 ')) return before!.split(' ')[4] ?? null;
  }
  return null;
}

let cache: { atMs: number; value: Promise<CompetingShaper[]> } | null = null;

export function linuxCompetingShapers(): Promise<CompetingShaper[]> {
  const now = Date.now();
  if (cache === null || now - cache.atMs > CACHE_MS) {
    const value = (async () => {
      const root = await cgroup2Root();
      const parts = await Promise.all([
        qdiscShapers(),
        root === null ? Promise.resolve([]) : cgroupProgramShapers(root),
        processShapers(),
      ]);
      return parts.flat();
    })();
    cache = { atMs: now, value };
  }
  return cache.value;
}
