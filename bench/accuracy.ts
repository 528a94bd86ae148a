/**
 * `npm run bench`: shaping accuracy of a real NetClamp instance (started here, stopped at the end).
 * Matrix: path (loopback, veth, 20 ms relay) x direction x limit x connections; each cell runs a copy of
 * iperf3 under one LIMIT rule against the real /usr/bin/iperf3 in the peer namespace. Prints a table
 * and writes bench/results/accuracy-<timestamp>.json. Needs root.
 *
 * Options: --seconds N (per run, default 8), --paths loopback,veth,relay, --limits 262144,2097152,...,
 * --conns 1,4, --directions download,upload.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NetLab, type IperfServer, type NetPath, type PathKind } from '../test/net/netlab.js';
import { copyExecutable, runIperf } from '../test/net/iperf.js';
import { repoRoot } from '../test/net/exec.js';
import { NetClampService, ruleDraft, type StoredRule } from '../test/e2e/service.js';

type Direction = 'download' | 'upload';

interface Cell {
  path: PathKind;
  direction: Direction;
  limitBytesPerSec: number | null;
  connections: number;
  achievedBytesPerSec: number | null;
  ratio: number | null;
  inTarget: boolean | null;
  error?: string;
}

const TARGET = { min: 0.9, max: 1.03 };
const OMIT_SECONDS = 1;

function list(value: string): string[] {
  return value.split(',').map((item) => item.trim()).filter(Boolean);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '8' },
      paths: { type: 'string', default: 'loopback,veth,relay' },
      limits: { type: 'string', default: '262144,2097152,16777216' },
      conns: { type: 'string', default: '1,4' },
      directions: { type: 'string', default: 'download,upload' },
    },
  });
  if (process.getuid?.() !== 0) {
    console.error('bench: needs root (network namespaces, BPF)');
    return 2;
  }
  const seconds = Number(values.seconds);
  const pathKinds = list(values.paths) as PathKind[];
  const limits = list(values.limits).map(Number);
  const connections = list(values.conns).map(Number);
  const directions = list(values.directions) as Direction[];

  const lab = new NetLab();
  const app = copyExecutable('/usr/bin/iperf3', 'nc-bench-');
  const cells: Cell[] = [];
  let service: NetClampService | null = null;
  try {
    const paths = new Map<PathKind, { path: NetPath; server: IperfServer }>();
    for (const kind of pathKinds) {
      const path = await lab.createPath(kind);
      paths.set(kind, { path, server: await lab.startIperfServer(path) });
    }

    // Baseline without NetClamp: what each path carries (the relay must not be the bottleneck).
    for (const [kind, { path, server }] of paths) {
      for (const direction of directions) {
        const cell: Cell = { path: kind, direction, limitBytesPerSec: null, connections: 1, achievedBytesPerSec: null, ratio: null, inTarget: null };
        try {
          const result = await runIperf({ ns: path.clientNs, binary: app.path, server, seconds: 3, reverse: direction === 'download' });
          cell.achievedBytesPerSec = result.goodputBytesPerSec;
        } catch (error) {
          cell.error = (error as Error).message;
        }
        cells.push(cell);
        printCell(cell);
      }
    }

    service = await NetClampService.start();
    let rule: StoredRule | null = null;
    for (const [kind, entry] of paths) {
      for (const direction of directions) {
        for (const limit of limits) {
          for (const conns of connections) {
            const cell: Cell = { path: kind, direction, limitBytesPerSec: limit, connections: conns, achievedBytesPerSec: null, ratio: null, inTarget: null };
            try {
              const draft = ruleDraft({
                app_path: app.path,
                action: 'LIMIT',
                rate_limit_down_bytes_per_sec: direction === 'download' ? limit : null,
                rate_limit_up_bytes_per_sec: direction === 'upload' ? limit : null,
              });
              rule = rule ? await service.updateRule(rule.id, draft) : await service.createRule(draft);
              if (rule.sync_state !== 'SYNCED') throw new Error(`rule ${rule.sync_state}: ${rule.sync_error}`);
              const result = await runIperf({
                ns: entry.path.clientNs,
                binary: app.path,
                server: entry.server,
                // One bucket (>= 64 KiB) released at once is 3% of 8 s at 256 KiB/s: measure low rates longer.
                seconds: limit <= 262144 ? Math.max(seconds, 12) : seconds,
                omitSeconds: OMIT_SECONDS,
                parallel: conns,
                reverse: direction === 'download',
              });
              cell.achievedBytesPerSec = result.goodputBytesPerSec;
              cell.ratio = result.goodputBytesPerSec / limit;
              cell.inTarget = cell.ratio >= TARGET.min && cell.ratio <= TARGET.max;
            } catch (error) {
              cell.error = (error as Error).message;
              // A failed run can leave the iperf3 server mid-test; start a fresh one for the next cell.
              entry.server.stop();
              entry.server = await lab.startIperfServer(entry.path);
            }
            cells.push(cell);
            printCell(cell);
          }
        }
      }
    }
  } finally {
    await service?.dispose();
    lab.cleanup();
    app.remove();
  }

  printTable(cells);
  const resultsDir = join(repoRoot(), 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, `accuracy-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), seconds, omitSeconds: OMIT_SECONDS, target: TARGET, cells }, null, 2) + '\n');
  console.log(`\nwrote ${file}`);
  const measured = cells.filter((cell) => cell.limitBytesPerSec !== null);
  const inTarget = measured.filter((cell) => cell.inTarget).length;
  console.log(`${inTarget}/${measured.length} cells within [${TARGET.min}, ${TARGET.max}]`);
  return measured.some((cell) => cell.error) ? 1 : 0;
}

function printCell(cell: Cell): void {
  const what = cell.limitBytesPerSec === null ? 'no rule' : `${cell.limitBytesPerSec} B/s`;
  const outcome = cell.error
    ? `ERROR ${cell.error}`
    : `${Math.round(cell.achievedBytesPerSec ?? 0)} B/s${cell.ratio === null ? '' : ` ratio ${cell.ratio.toFixed(3)}`}`;
  console.error(`  ${cell.path} ${cell.direction} ${what} x${cell.connections}: ${outcome}`);
}

function printTable(cells: Cell[]): void {
  const header = ['path', 'direction', 'limit B/s', 'conns', 'achieved B/s', 'ratio', 'in-target'];
  const rows = cells.map((cell) => [
    cell.path,
    cell.direction,
    cell.limitBytesPerSec === null ? '(none)' : String(cell.limitBytesPerSec),
    String(cell.connections),
    cell.achievedBytesPerSec === null ? 'error' : String(Math.round(cell.achievedBytesPerSec)),
    cell.ratio === null ? '-' : cell.ratio.toFixed(3),
    cell.inTarget === null ? '-' : cell.inTarget ? 'yes' : 'no',
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (row: string[]): string => row.map((value, column) => value.padEnd(widths[column]!)).join('  ');
  console.log('\n' + line(header));
  console.log(widths.map((width) => '-'.repeat(width)).join('  '));
  for (const row of rows) console.log(line(row));
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('bench failed:', error);
    process.exit(1);
  },
);
