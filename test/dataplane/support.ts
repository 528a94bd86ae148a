/**
 * Fixtures for the data-plane tests: a copy of curl as "the app" (its own inode, so rules on it touch
 * nothing else), a loopback HTTP peer in this (exempt) process, and bpftool views of our programs.
 */
import { spawn, execFileSync } from 'node:child_process';
import { copyFileSync, chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EngineRule } from '../../lib/engine/engine.js';

export const CURL = '/usr/bin/curl';

export interface AppCopy {
  path: string;
  remove(): void;
}

export function copyOfCurl(): AppCopy {
  const dir = mkdtempSync(join(tmpdir(), 'nc-dataplane-'));
  const path = join(dir, 'curl-app');
  copyFileSync(CURL, path);
  chmodSync(path, 0o755);
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface Peer {
  port: number;
  host: string;
  url(path: string): string;
  close(): Promise<void>;
}

/**
 * `/small`: a few bytes. `/bytes?n=N`: N bytes as fast as the socket takes them.
 * `/trickle?ms=M`: 16 KiB every 50 ms for M milliseconds (a long-running transfer).
 * `POST /sink`: reads and discards the body.
 */
export async function startPeer(host = '127.0.0.1'): Promise<Peer> {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/small') {
      res.end('hello\n');
    } else if (url.pathname === '/bytes') {
      let left = Number(url.searchParams.get('n') ?? '0');
      res.writeHead(200, { 'content-length': String(left) });
      const pump = (): void => {
        while (left > 0) {
          const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
          left -= piece.length;
          if (!res.write(piece)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
    } else if (url.pathname === '/trickle') {
      const until = Date.now() + Number(url.searchParams.get('ms') ?? '10000');
      res.writeHead(200);
      const timer = setInterval(() => {
        if (Date.now() > until || res.destroyed) {
          clearInterval(timer);
          res.end();
          return;
        }
        res.write(chunk.subarray(0, 16 * 1024));
      }, 50);
      res.on('close', () => clearInterval(timer));
    } else if (url.pathname === '/sink') {
      req.on('data', () => {});
      req.on('end', () => res.end('ok\n'));
    } else {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    host,
    url: (path) => `http://${host}:${port}${path}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

export interface Running {
  started: number;
  /** Resolves when the process has exited. */
  done: Promise<RunResult>;
  kill(): void;
}

export function start(command: string, args: string[], timeoutMs = 30_000): Running {
  const started = performance.now();
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<RunResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, elapsedMs: performance.now() - started });
    });
  });
  return { started, done, kill: () => child.kill('SIGKILL') };
}

export function run(command: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
  return start(command, args, timeoutMs).done;
}

/** curl arguments for a quiet single request that fails loudly. */
export function curlArgs(url: string, maxTimeSec = 10, extra: string[] = []): string[] {
  return ['-sS', '-o', '/dev/null', '--max-time', String(maxTimeSec), ...extra, url];
}

export function rule(overrides: Partial<EngineRule> & Pick<EngineRule, 'id' | 'action' | 'appPath'>): EngineRule {
  return {
    direction: 'BOTH',
    protocol: 'ANY',
    remoteAddress: '',
    remotePort: 0,
    rateDownBytesPerSec: null,
    rateUpBytesPerSec: null,
    limitScope: 'PER_APP',
    matchMode: 'EXACT_PATH',
    priority: 100,
    resetCounters: false,
    ...overrides,
  };
}

interface BpftoolProg {
  id: number;
  name?: string;
}

/** Ids of the nc_ programs whose fds (program or link fds) `pid` holds, from /proc/<pid>/fdinfo. */
export function ncProgramsOf(pid: number): number[] {
  const held = new Set<number>();
  const dir = `/proc/${pid}/fdinfo`;
  for (const fd of readdirSync(dir)) {
    let info: string;
    try {
      info = readFileSync(join(dir, fd), 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    const m = /^prog_id:\s*(\d+)$/m.exec(info);
    if (m) held.add(Number(m[1]));
  }
  const progs = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' })) as BpftoolProg[];
  return progs.filter((p) => p.name?.startsWith('nc_') && held.has(p.id)).map((p) => p.id);
}

/** Ids of every loaded program. */
export function loadedProgramIds(): Set<number> {
  const progs = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8' })) as BpftoolProg[];
  return new Set(progs.map((p) => p.id));
}

/** Program ids attached anywhere in the cgroup tree. */
export function cgroupAttachedIds(): Set<number> {
  const out = execFileSync('bpftool', ['cgroup', 'tree'], { encoding: 'utf8' });
  const ids = new Set<number>();
  for (const line of out.split('\n')) {
    const m = /^(?:\/\S*)?\s*(\d+)\s+\S+/.exec(line);
    if (m) ids.add(Number(m[1]));
  }
  return ids;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
