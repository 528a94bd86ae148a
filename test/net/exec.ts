/**
 * Small process helpers for the network harness: run a command and collect its output, or run it
 * synchronously (cleanup paths must work from a process 'exit' hook, where nothing async runs).
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface CommandResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a command; rejects with its stderr when it exits non-zero (unless `allowFailure`). */
export function run(
  command: string,
  args: readonly string[],
  options: { allowFailure?: boolean; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { timeout: options.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        if (error && !options.allowFailure) {
          reject(new Error(`${command} ${args.join(' ')} failed (${code}): ${stderr.trim() || error.message}`));
          return;
        }
        resolve({ stdout, stderr, code });
      },
    );
  });
}

/** Best-effort synchronous command for cleanup: never throws, returns whether it succeeded. */
export function runQuietSync(command: string, args: readonly string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** Synchronous command returning stdout; throws on failure. */
export function runSyncText(command: string, args: readonly string[]): string {
  return execFileSync(command, args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
}

/** The repository root (where package.json lives), found from this compiled file's location. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'tsconfig.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('repository root not found above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
