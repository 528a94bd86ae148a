/**
 * What every bench does last: its JSON record under bench/results/ (ignored by git), and its exit code.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, run } from '../test/net/exec.js';

/**
 * Writes bench/results/<prefix>-<start time>.json: the start and end, the kernel, the command line, and
 * `fields` (the bench's own figures and printed table). Returns the file's path, which the bench prints.
 */
export async function writeBenchResult(prefix: string, started: Date, fields: Record<string, unknown>): Promise<string> {
  const dir = join(repoRoot(), 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${prefix}-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  const kernel = (await run('uname', ['-r'])).stdout.trim();
  writeFileSync(file, JSON.stringify({
    date: started.toISOString(), finished: new Date().toISOString(), kernel, argv: process.argv.slice(2), ...fields,
  }, null, 2) + '\n');
  return file;
}

/** Runs a bench's main and exits with its code (1 when it throws). */
export function runBench(main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error('bench failed:', error);
      process.exit(1);
    },
  );
}
