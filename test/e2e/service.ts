/**
 * Runs a real NetClamp service for end-to-end tests: `node dist/lib/cli.js serve` as a child, with its
 * own data dir and a free loopback port, plus a small typed REST client. Every instance is stopped by
 * `stop()` (SIGTERM, then SIGKILL if it hangs) and by a process-exit hook, so a failing test never
 * leaves a service (and its BPF programs) behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../net/exec.js';

export interface RuleDraft {
  name: string;
  app_path: string;
  action: 'ALLOW' | 'BLOCK' | 'LIMIT';
  direction: 'INBOUND' | 'OUTBOUND' | 'BOTH';
  remote_address: string;
  remote_port: number;
  protocol: 'ANY' | 'TCP' | 'UDP' | 'ICMP';
  rate_limit_down_bytes_per_sec: number | null;
  rate_limit_up_bytes_per_sec: number | null;
  limit_scope: 'PER_APP' | 'PER_PROCESS' | 'PER_CONNECTION';
  match_mode: 'EXACT_PATH' | 'FILENAME' | 'DIRECTORY';
  priority: number;
  enabled: boolean;
}

export interface StoredRule extends RuleDraft {
  id: string;
  revision: number;
  sync_state: 'SYNCED' | 'PENDING' | 'ERROR' | 'DISABLED';
  sync_error: string | null;
  bytes_up: number;
  bytes_down: number;
  blocked_count: number;
}

export interface ServiceStatus {
  version: string;
  platform: string;
  wfp_active: boolean;
  kdrv_active: boolean;
  active_rules: number;
  total_blocked: number;
  [field: string]: unknown;
}

export interface ApiResponse<T> {
  status: number;
  body: T;
  headers: Headers;
}

/** A rule draft with the reference's defaults, for one executable. */
export function ruleDraft(overrides: Partial<RuleDraft> & Pick<RuleDraft, 'app_path' | 'action'>): RuleDraft {
  return {
    name: `e2e ${overrides.action} ${overrides.app_path}`,
    direction: 'BOTH',
    remote_address: '',
    remote_port: 0,
    protocol: 'ANY',
    rate_limit_down_bytes_per_sec: null,
    rate_limit_up_bytes_per_sec: null,
    limit_scope: 'PER_APP',
    match_mode: 'EXACT_PATH',
    priority: 100,
    enabled: true,
    ...overrides,
  };
}

const liveServices = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of liveServices) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export class NetClampService {
  readonly baseUrl: string;
  /** Everything the service printed, for failure messages. */
  output = '';
  private child: ChildProcess | null = null;
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | null = null;
  private cachedToken: string | null = null;

  private constructor(
    readonly dataDir: string,
    readonly port: number,
    private readonly ownsDataDir: boolean,
  ) {
    this.baseUrl = `http://127.0.0.1:${port}/api/v1`;
  }

  /**
   * Starts a service. Without `dataDir`, a fresh temp dir that `dispose()` removes. Resolves once the
   * service prints its `listening on` line.
   */
  static async start(options: { dataDir?: string; port?: number } = {}): Promise<NetClampService> {
    const port = options.port ?? (await freeLoopbackPort());
    const ownsDataDir = options.dataDir === undefined;
    const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'nc-e2e-data-'));
    const service = new NetClampService(dataDir, port, ownsDataDir);
    await service.launch();
    return service;
  }

  /** Starts the service again on the same data dir and port (after `stop()`). */
  async restart(): Promise<void> {
    if (this.child) throw new Error('service still running');
    this.cachedToken = null;
    await this.launch();
  }

  get token(): string {
    this.cachedToken ??= readFileSync(join(this.dataDir, 'auth.token'), 'utf8').trim();
    return this.cachedToken;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async request<T = unknown>(method: string, path: string, body?: unknown): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(this.baseUrl + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await response.text();
    let parsed: unknown = text;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        // leave as text; the caller's assertion will show it
      }
    }
    return { status: response.status, body: parsed as T, headers: response.headers };
  }

  /** Like `request`, but throws unless the status is the expected one. */
  async expect<T = unknown>(status: number, method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.request<T>(method, path, body);
    if (response.status !== status) {
      throw new Error(`${method} ${path}: expected ${status}, got ${response.status}: ${JSON.stringify(response.body)}`);
    }
    return response.body;
  }

  status(): Promise<ServiceStatus> {
    return this.expect<ServiceStatus>(200, 'GET', '/status');
  }

  createRule(draft: RuleDraft): Promise<StoredRule> {
    return this.expect<StoredRule>(201, 'POST', '/rules', draft);
  }

  updateRule(id: string, draft: RuleDraft): Promise<StoredRule> {
    return this.expect<StoredRule>(200, 'PUT', `/rules/${id}`, draft);
  }

  /** SIGTERM and wait for a clean exit; SIGKILL after `timeoutMs` and report that as a failure. */
  async stop(timeoutMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const child = this.child;
    const exited = this.exited;
    if (!child || !exited) return { code: 0, signal: null };
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const outcome = await Promise.race([exited, timedOut]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      child.kill('SIGKILL');
      await exited;
      throw new Error(`service did not exit within ${timeoutMs} ms of SIGTERM:\n${this.output.slice(-2000)}`);
    }
    return outcome;
  }

  /** Stops the service if it runs (ignoring how) and removes a temp data dir this helper created. */
  async dispose(): Promise<void> {
    try {
      await this.stop();
    } catch {
      // stop() already killed it; the test that cares asserts on stop() itself
    }
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  private async launch(): Promise<void> {
    installExitHook();
    const cli = join(repoRoot(), 'dist', 'lib', 'cli.js');
    const child = spawn(
      process.execPath,
      [cli, 'serve', '--data-dir', this.dataDir, '--listen', `127.0.0.1:${this.port}`],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NETCLAMP_DATA_DIR: this.dataDir } },
    );
    this.child = child;
    liveServices.add(child);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        liveServices.delete(child);
        if (this.child === child) this.child = null;
        resolve({ code, signal });
      });
    });
    const ready = new RegExp(`listening on http://127\\.0\\.0\\.1:${this.port}`);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`service not listening after 30 s:\n${this.output.slice(-2000)}`));
      }, 30_000);
      const onData = (chunk: Buffer): void => {
        this.output = (this.output + chunk.toString('utf8')).slice(-200_000);
        if (ready.test(this.output)) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`service exited (${code ?? signal}) before listening:\n${this.output.slice(-2000)}`));
      });
    });
  }
}

/** Polls `probe` until it returns a truthy value or `timeoutMs` passes; returns the last value. */
export async function eventually<T>(probe: () => Promise<T>, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await probe();
  while (!value && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
    value = await probe();
  }
  return value;
}
