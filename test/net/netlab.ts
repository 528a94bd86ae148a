/**
 * Network lab for real-traffic tests: private network namespaces (prefix `nc-`), the paths between
 * them (loopback inside one namespace, a veth pair, a TAP pair joined by the user-space delay relay),
 * and iperf3 servers inside them. Traffic never leaves these namespaces: nothing is routed out.
 *
 * Everything a lab creates is registered for cleanup. `cleanup()` is synchronous and idempotent so it
 * can run from t.after, a finally block, or the process 'exit' hook installed here; namespaces left
 * behind by a process that was killed outright are removed by the next lab (their names carry the pid).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { repoRoot, run, runQuietSync, runSyncText } from './exec.js';

export const NAMESPACE_PREFIX = 'nc-';
const NETNS_DIR = '/run/netns';

export type PathKind = 'loopback' | 'veth' | 'relay';

/** Two ends of a test path: the app (client) runs in `clientNs`, the peer (server) in `serverNs`. */
export interface NetPath {
  kind: PathKind;
  clientNs: string;
  serverNs: string;
  clientAddress: string;
  serverAddress: string;
  /** IPv6 addresses of the same ends (ULA, no DAD: usable at once); `::1` on the loopback path. */
  clientAddress6: string;
  serverAddress6: string;
}

export interface RelayOptions {
  /** One-way delay per direction, ms. 10 ms each way gives 20 ms RTT. */
  oneWayDelayMs?: number;
  /** MTU of both TAPs. 9000 keeps the relay's per-frame cost far below the rates under test. */
  mtu?: number;
}

export interface IperfServer {
  ns: string;
  address: string;
  port: number;
  stop(): void;
}

interface EndAddresses {
  v4: string;
  v6: string;
}

function pathAddresses(client: EndAddresses, server: EndAddresses): Pick<NetPath, 'clientAddress' | 'serverAddress' | 'clientAddress6' | 'serverAddress6'> {
  return { clientAddress: client.v4, serverAddress: server.v4, clientAddress6: client.v6, serverAddress6: server.v6 };
}

let labSequence = 0;
const liveLabs = new Set<NetLab>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const lab of [...liveLabs]) lab.cleanup();
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      for (const lab of [...liveLabs]) lab.cleanup();
      process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1));
    });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Pids of every process whose network namespace is `ns`. */
function pidsInNamespace(ns: string): number[] {
  try {
    const out = runSyncText('ip', ['netns', 'pids', ns]);
    return out.split(/\s+/).filter(Boolean).map(Number).filter((pid) => pid > 1 && pid !== process.pid);
  } catch {
    return [];
  }
}


/** Kills what runs inside a namespace (only our own test processes live there), then deletes it. */
function destroyNamespace(ns: string): void {
  for (const pid of pidsInNamespace(ns)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  runQuietSync('ip', ['netns', 'delete', ns]);
}

/** Removes `nc-<pid>-…` namespaces whose creating process no longer exists. */
export function removeStaleNamespaces(): string[] {
  if (!existsSync(NETNS_DIR)) return [];
  const removed: string[] = [];
  for (const name of readdirSync(NETNS_DIR)) {
    const match = /^nc-(\d+)-/.exec(name);
    if (!match) continue;
    const owner = Number(match[1]);
    if (owner === process.pid || pidAlive(owner)) continue;
    destroyNamespace(name);
    removed.push(name);
  }
  return removed;
}

export function namespaceExists(ns: string): boolean {
  return existsSync(join(NETNS_DIR, ns));
}

/** Path of the compiled relay; scripts/pretest.js builds it. */
export function relayBinaryPath(): string {
  return join(repoRoot(), 'build', 'test-tools', 'delay-relay');
}

/**
 * Builds the relay when it is missing or older than its source. scripts/pretest.js builds it too, but
 * a cmake-js full rebuild wipes build/, and `npm run bench` does not run pretest.
 */
export function ensureRelayBinary(): string {
  const binary = relayBinaryPath();
  const source = join(repoRoot(), 'test', 'net', 'delay-relay.c');
  if (existsSync(binary) && statSync(binary).mtimeMs >= statSync(source).mtimeMs) return binary;
  mkdirSync(dirname(binary), { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-pthread', '-o', binary, source], { stdio: 'inherit' });
  return binary;
}

export class NetLab {
  readonly id: number;
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];
  private subnetSequence = 0;
  private portSequence = 5201;
  private cleaned = false;

  constructor() {
    installExitHook();
    removeStaleNamespaces();
    this.id = ++labSequence;
    liveLabs.add(this);
  }

  /** Names of the namespaces this lab created and has not removed yet. */
  get namespaceNames(): readonly string[] {
    return this.namespaces;
  }

  /** A fresh namespace with loopback up. `role` is a short tag for humans (a, b, lo). */
  async createNamespace(role: string): Promise<string> {
    this.assertOpen();
    const name = `${NAMESPACE_PREFIX}${process.pid}-${this.id}-${this.namespaces.length}${role}`;
    await run('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  /** Client and server in one namespace, talking over its loopback. */
  async loopbackPath(): Promise<NetPath> {
    const ns = await this.createNamespace('lo');
    return {
      kind: 'loopback', clientNs: ns, serverNs: ns,
      clientAddress: '127.0.0.1', serverAddress: '127.0.0.1', clientAddress6: '::1', serverAddress6: '::1',
    };
  }

  /** Two namespaces joined by a veth pair (no delay: the low-RTT extreme). */
  async vethPath(): Promise<NetPath> {
    const clientNs = await this.createNamespace('a');
    const serverNs = await this.createNamespace('b');
    const [client, server] = this.nextSubnet();
    // Created directly inside the namespaces, so the names never collide with anything in the host.
    await run('ip', ['-n', clientNs, 'link', 'add', 'ncveth0', 'type', 'veth', 'peer', 'name', 'ncveth1', 'netns', serverNs]);
    await this.configureEnd(clientNs, 'ncveth0', client);
    await this.configureEnd(serverNs, 'ncveth1', server);
    return { kind: 'veth', clientNs, serverNs, ...pathAddresses(client, server) };
  }

  /** Two namespaces, each with a TAP, joined by the delay relay (20 ms RTT by default). */
  async relayPath(options: RelayOptions = {}): Promise<NetPath> {
    const oneWayDelayMs = options.oneWayDelayMs ?? 10;
    const mtu = options.mtu ?? 9000;
    const relayBinary = ensureRelayBinary();
    const clientNs = await this.createNamespace('a');
    const serverNs = await this.createNamespace('b');
    const relay = spawn(
      relayBinary,
      [join(NETNS_DIR, clientNs), 'nctap0', join(NETNS_DIR, serverNs), 'nctap0', String(Math.round(oneWayDelayMs * 1000)), String(mtu)],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.children.push(relay);
    await waitForLine(relay, /^ready$/m, 5000, 'delay relay');
    detachQuietly(relay);
    const [client, server] = this.nextSubnet();
    await this.configureEnd(clientNs, 'nctap0', client);
    await this.configureEnd(serverNs, 'nctap0', server);
    return { kind: 'relay', clientNs, serverNs, ...pathAddresses(client, server) };
  }

  async createPath(kind: PathKind, relay?: RelayOptions): Promise<NetPath> {
    if (kind === 'loopback') return this.loopbackPath();
    if (kind === 'veth') return this.vethPath();
    return this.relayPath(relay);
  }

  /**
   * The real /usr/bin/iperf3 (no rule matches it) serving in the path's server namespace, bound to
   * `address` (the server's IPv4 address unless told, e.g. `path.serverAddress6`).
   */
  async startIperfServer(path: NetPath, binary = '/usr/bin/iperf3', address = path.serverAddress): Promise<IperfServer> {
    this.assertOpen();
    const port = this.portSequence++;
    const server = spawn(
      'ip',
      ['netns', 'exec', path.serverNs, binary, '-s', '-B', address, '-p', String(port), '--forceflush'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.children.push(server);
    await waitForLine(server, /Server listening/, 5000, 'iperf3 server');
    detachQuietly(server);
    return {
      ns: path.serverNs,
      address,
      port,
      stop: () => killChild(server),
    };
  }

  /** Starts a long-lived process in a namespace and registers it for cleanup. */
  spawnInNamespace(ns: string, command: string, args: readonly string[]): ChildProcess {
    this.assertOpen();
    const child = spawn('ip', ['netns', 'exec', ns, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    detachQuietly(child);
    return child;
  }

  /** Kills every process and relay, then deletes every namespace. Safe to call more than once. */
  cleanup(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const child of this.children) killChild(child);
    for (const ns of this.namespaces.splice(0)) destroyNamespace(ns);
    liveLabs.delete(this);
  }

  /** The two ends of a fresh subnet: IPv4 in 10.199.N.0/24 and IPv6 in fd00:199:N::/64. */
  private nextSubnet(): [EndAddresses, EndAddresses] {
    // Namespaces are private, so the same subnet in two labs never meets; distinct ones ease reading.
    const third = ((this.id * 16 + this.subnetSequence++) % 254) + 1;
    return [
      { v4: `10.199.${third}.1`, v6: `fd00:199:${third}::1` },
      { v4: `10.199.${third}.2`, v6: `fd00:199:${third}::2` },
    ];
  }

  private async configureEnd(ns: string, device: string, address: EndAddresses): Promise<void> {
    await run('ip', ['-n', ns, 'addr', 'add', `${address.v4}/24`, 'dev', device]);
    // nodad: the address is usable at once instead of after ~1 s of duplicate address detection.
    await run('ip', ['-n', ns, '-6', 'addr', 'add', `${address.v6}/64`, 'dev', device, 'nodad']);
    await run('ip', ['-n', ns, 'link', 'set', device, 'txqueuelen', '10000', 'up']);
  }

  private assertOpen(): void {
    if (this.cleaned) throw new Error('NetLab already cleaned up');
  }
}

/**
 * Keeps reading a background child's output (a full pipe would stall it) into a short tail for error
 * messages, and lets the test process exit even if a test forgot cleanup (the exit hook then runs).
 */
function detachQuietly(child: ChildProcess): void {
  const keep = (chunk: Buffer): void => {
    const tail = (outputTails.get(child) ?? '') + chunk.toString('utf8');
    outputTails.set(child, tail.slice(-4096));
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) {
    (stream as unknown as { unref?: () => void } | null)?.unref?.();
  }
}

const outputTails = new WeakMap<ChildProcess, string>();

/** Last few KiB a background child printed (for failure messages). */
export function outputTail(child: ChildProcess): string {
  return outputTails.get(child) ?? '';
}

function killChild(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    child.kill('SIGKILL');
  } catch {
    // already gone
  }
  child.stdin?.destroy();
}

/** Resolves once the child prints a line matching `pattern` (stdout or stderr); rejects on exit or timeout. */
export function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs: number, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (chunk: Buffer): void => {
      seen += chunk.toString('utf8');
      const match = pattern.exec(seen);
      if (match) {
        finish();
        resolve(match[0]);
      }
    };
    const onExit = (code: number | null, signal: string | null): void => {
      finish();
      reject(new Error(`${what} exited (${code ?? signal}) before it was ready: ${seen.trim()}`));
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`${what} not ready after ${timeoutMs} ms: ${seen.trim()}`));
    }, timeoutMs);
    const finish = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', onExit);
  });
}
