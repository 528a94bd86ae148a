/**
 * What of NetClamp is in the kernel, read with bpftool: programs named `nc_*`, their cgroup attachments,
 * and tc/xdp attachments in this namespace. Tests compare against a snapshot taken before the service
 * started, so programs of another NetClamp running on the same machine are not blamed on this one.
 */
import { readFileSync } from 'node:fs';
import { run } from '../net/exec.js';

export const PROGRAM_PREFIX = 'nc_';

interface BpfProgram {
  id: number;
  name?: string;
}

export async function netclampProgramIds(): Promise<Set<number>> {
  const { stdout } = await run('bpftool', ['prog', 'show', '--json']);
  const programs = JSON.parse(stdout) as BpfProgram[];
  return new Set(programs.filter((program) => program.name?.startsWith(PROGRAM_PREFIX)).map((program) => program.id));
}

/** The cgroup v2 mount (hybrid hosts mount it at /sys/fs/cgroup/unified). */
export function cgroup2Root(): string {
  const mounts = readFileSync('/proc/mounts', 'utf8').split('\n');
  const line = mounts.find((entry) => entry.split(' ')[2] === 'cgroup2');
  if (!line) throw new Error('no cgroup2 mount');
  return line.split(' ')[1]!;
}

/** Program ids attached anywhere in the cgroup v2 tree, with their names. */
export async function cgroupAttachments(): Promise<BpfProgram[]> {
  const { stdout } = await run('bpftool', ['cgroup', 'tree', cgroup2Root(), '--json']);
  const tree = JSON.parse(stdout) as { programs?: BpfProgram[] }[];
  return tree.flatMap((cgroup) => cgroup.programs ?? []);
}

/** Names of tc/xdp programs attached in the current network namespace. */
export async function netAttachmentNames(): Promise<string[]> {
  const { stdout } = await run('bpftool', ['net', 'show', '--json']);
  const names: string[] = [];
  // The JSON shape differs between bpftool versions; every attachment carries a "name".
  JSON.stringify(JSON.parse(stdout), (key, value: unknown) => {
    if (key === 'name' && typeof value === 'string') names.push(value);
    return value;
  });
  return names;
}

/**
 * What this service left in the kernel after it stopped, given the programs that existed before it started.
 * The kernel frees a program whose last reference closed from a workqueue after an RCU grace period, so
 * an id can stay listed for a moment after the process exited: wait up to `settleMs` for it to go.
 */
export async function leftoversSince(before: Set<number>, settleMs = 5_000): Promise<string[]> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const leftovers = await leftoversNow(before);
    if (leftovers.length === 0 || Date.now() >= deadline) return leftovers;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function leftoversNow(before: Set<number>): Promise<string[]> {
  const leftovers: string[] = [];
  for (const id of await netclampProgramIds()) {
    if (!before.has(id)) leftovers.push(`program ${id} still loaded`);
  }
  for (const program of await cgroupAttachments()) {
    if (program.name?.startsWith(PROGRAM_PREFIX) && !before.has(program.id)) {
      leftovers.push(`program ${program.id} (${program.name}) still attached to a cgroup`);
    }
  }
  for (const name of await netAttachmentNames()) {
    if (name.startsWith(PROGRAM_PREFIX)) leftovers.push(`tc/xdp attachment ${name}`);
  }
  return leftovers;
}
