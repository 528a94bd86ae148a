/**
 * `node dist/bench/report.js bench/results/bench-A.json [bench-B.json ...]`: one Markdown table (for the
 * README's "Shaping accuracy" section) from one or more bench runs; in a cell measured by several files,
 * a later file's run of a shaper replaces the earlier one.
 */
import { readFileSync } from 'node:fs';
import { fixed, formatRate } from './table.js';

interface Run {
  shaper: string;
  ratio: number | null;
  wireRatio: number | null;
  fairness: number | null;
  clientCpuPercent: number | null;
  counterRatio?: number | null;
  error?: string;
}

interface Cell {
  kind: 'tcp' | 'udp';
  path: string;
  direction: string;
  limitBytesPerSec: number;
  connections: number;
  baselineBytesPerSec: number | null;
  carried: boolean;
  runs: Run[];
}

const SHAPERS = ['netclamp', 'trickle', 'htb'];

function inGoal(cell: Cell, run: Run): boolean {
  if (run.ratio === null) return false;
  if (run.wireRatio !== null) return run.wireRatio >= 0.99 && run.wireRatio <= 1.01;
  if (cell.kind === 'udp') return run.ratio >= 0.98 && run.ratio <= 1.02;
  return run.ratio >= 0.97 && run.ratio <= 1.02;
}

function shortError(error: string): string {
  if (error.startsWith('skipped')) return 'skipped (time budget)';
  if (/select failed/.test(error)) return 'select() EINVAL';
  if (/Connection timed out/.test(error)) return 'a connection timed out';
  if (/gave no JSON \(exit \d+\):\s*(no output.*)?$/.test(error)) return 'run killed at its timeout';
  return error.replace(/^iperf3 failed \(exit \d+\): /, '').slice(0, 40);
}

function ratioText(cell: Cell, run: Run | undefined): string {
  if (!run) return '';
  if (run.error) return `error: ${shortError(run.error)}`;
  let text = fixed(run.ratio);
  if (run.wireRatio !== null) text += ` (wire ${fixed(run.wireRatio)})`;
  if (run.counterRatio !== undefined && run.counterRatio !== null) text += ` [counted ${fixed(run.counterRatio)}]`;
  return inGoal(cell, run) ? text : `**${text}**`;
}

export function markdownTable(cells: Cell[]): string {
  const lines = [
    '| scenario | limit | NetClamp | trickle | HTB (wire) | fairness (Jain) NC / tr / HTB | client CPU % NC / tr / HTB |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const cell of cells) {
    const scenario = `${cell.kind} ${cell.path} ${cell.direction} x${cell.connections}`;
    if (!cell.carried) {
      lines.push(`| ${scenario} | ${formatRate(cell.limitBytesPerSec)} | not carried: bare path ${formatRate(cell.baselineBytesPerSec ?? 0)} | | | | |`);
      continue;
    }
    const byName = new Map(cell.runs.map((run) => [run.shaper, run]));
    const fairness = cell.connections > 1 ? SHAPERS.map((name) => fixed(byName.get(name)?.fairness ?? null, 2)).join(' / ') : '';
    const cpu = SHAPERS.map((name) => fixed(byName.get(name)?.clientCpuPercent ?? null, 1)).join(' / ');
    lines.push(`| ${scenario} | ${formatRate(cell.limitBytesPerSec)} | ${SHAPERS.map((name) => ratioText(cell, byName.get(name))).join(' | ')} | ${fairness} | ${cpu} |`);
  }
  return lines.join('\n');
}

const files = process.argv.slice(2);
if (files.length > 0) {
  const merged = new Map<string, Cell>();
  for (const file of files) {
    const data = JSON.parse(readFileSync(file, 'utf8')) as { cells: Cell[] };
    for (const cell of data.cells) {
      const key = `${cell.kind}/${cell.path}/${cell.direction}/${cell.limitBytesPerSec}/${cell.connections}`;
      const earlier = merged.get(key);
      if (!earlier || !earlier.carried || !cell.carried) {
        if (!earlier || cell.carried || !earlier.carried) merged.set(key, cell);
        continue;
      }
      // Same cell measured again (e.g. one shaper re-run): the later run of a shaper replaces the earlier.
      const runs = new Map(earlier.runs.map((run) => [run.shaper, run]));
      for (const run of cell.runs) if (!run.error?.startsWith('skipped')) runs.set(run.shaper, run);
      merged.set(key, { ...earlier, runs: [...runs.values()] });
    }
  }
  const order = ['loopback', 'veth', 'rtt20', 'rtt100'];
  const cells = [...merged.values()].sort((a, b) =>
    a.kind.localeCompare(b.kind) || order.indexOf(a.path) - order.indexOf(b.path) || b.direction.localeCompare(a.direction) ||
    a.limitBytesPerSec - b.limitBytesPerSec || a.connections - b.connections);
  console.log(markdownTable(cells));
}
