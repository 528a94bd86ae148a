/**
 * The live views: once a second it reads the engine's totals (into the throughput ring) and its
 * per-process counters (kept as the last two readings, so a rate is the difference of two samples);
 * on request it joins those with the kernel's socket table and the rules into /apps and /connections.
 *
 * The counts of /status (sockets, running apps) come from a socket-table read too, which is not cheap
 * (tens of ms with thousands of sockets), so /status does not pay it per request: while someone asks
 * for them, each sampler tick counts again, and a request answers with the last count when it is at
 * most 1.5 periods old (it waits for a new one only when nobody asked for a while).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ConnectionEntry, Engine, ProcessActivity } from '../engine/engine.js';
import type { Quota } from '../schemas/quota.js';
import type { Rule } from '../schemas/rule.js';
import { ThroughputRing, type ThroughputSample } from './throughput-ring.js';
import { SharedReading } from './shared-reading.js';

/** How long after the last /status the sampler keeps counting sockets and apps on each tick. */
const COUNTS_DEMAND_MS = 10_000;

export interface ActivityCounts {
  connections: number;
  apps: number;
}

export interface ActivityServiceOptions {
  engine: Engine;
  /** Enabled and disabled rules as /rules presents them. */
  listRules: () => Promise<Rule[]>;
  /** Every quota as /quotas presents it (for /apps/{pid}). */
  listQuotas?: () => Quota[];
  /** Milliseconds since the epoch; tests drive a fake clock. */
  now?: () => number;
  /** 0 = no timer (tests call `sample()` themselves). */
  intervalMs?: number;
  onError?: (error: unknown) => void;
}

export interface AppEntry {
  pid: number;
  name: string;
  path: string;
  bytes_up: number;
  bytes_down: number;
  rate_up: number;
  rate_down: number;
  connections: number;
  rule_id: string | null;
  blocked: boolean;
}

export interface ConnectionView {
  protocol: string;
  local_address: string;
  local_port: number;
  remote_address: string;
  remote_port: number;
  state: string;
  pid: number;
  app_path: string;
}

export interface AppDetail extends AppEntry {
  connection_list: ConnectionView[];
  rules: Rule[];
  quotas: Quota[];
}

interface ActivityReading {
  atMs: number;
  byPid: Map<number, ProcessActivity>;
}

const ACTION_RANK: Record<string, number> = { BLOCK: 0, LIMIT: 1, ALLOW: 2 };

/**
 * Does a rule's or quota's `app_path` under its `match_mode` name the executable at `appPath`? (Global
 * rules, app_path '', govern no app in particular.)
 */
export function coversApp(subject: Pick<Rule, 'app_path' | 'match_mode'>, appPath: string): boolean {
  if (subject.app_path === '' || appPath === '') return false;
  switch (subject.match_mode) {
    case 'FILENAME':
      return path.basename(subject.app_path) === path.basename(appPath);
    case 'DIRECTORY': {
      const dir = subject.app_path.endsWith('/') || subject.app_path.endsWith('\\') ? subject.app_path : subject.app_path + path.sep;
      return appPath.startsWith(dir);
    }
    default:
      return subject.app_path === appPath;
  }
}

/** The contract's order: highest priority first; on a tie BLOCK, then LIMIT, then ALLOW; then lowest id. */
export function governingRule(rules: Rule[]): Rule | null {
  const sorted = [...rules].sort((a, b) => b.priority - a.priority
    || (ACTION_RANK[a.action] ?? 3) - (ACTION_RANK[b.action] ?? 3)
    || Number(a.id) - Number(b.id));
  return sorted[0] ?? null;
}

/**
 * A listener (or an unbound/closed TCP socket) reports the unspecified address as its peer; it has none,
 * and /connections says so with "" as it does for an unconnected UDP socket, whatever the platform.
 */
function hasPeer(entry: ConnectionEntry): boolean {
  return !(entry.remotePort === 0 && ['', '0.0.0.0', '::'].includes(entry.remoteAddress));
}

/** Sockets per owning process (pid 0, no owner, is no process). */
function socketsByPid(connections: readonly ConnectionView[]): Map<number, { count: number; appPath: string }> {
  const byPid = new Map<number, { count: number; appPath: string }>();
  for (const connection of connections) {
    if (connection.pid <= 0) continue;
    const entry = byPid.get(connection.pid) ?? { count: 0, appPath: connection.app_path };
    entry.count++;
    byPid.set(connection.pid, entry);
  }
  return byPid;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readProcessIdentity(pid: number, fallbackPath: string): { name: string; path: string } {
  let exe = fallbackPath;
  let name = '';
  if (process.platform === 'linux') {
    try {
      exe = fs.readlinkSync(`/proc/${pid}/exe`);
    } catch {
      // kernel threads and other users' processes without ptrace access have no readable exe
    }
    try {
      name = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    } catch {
      // gone between the listing and now
    }
  }
  if (name === '' && exe !== '') name = path.basename(exe);
  return { name, path: exe };
}

export class ActivityService {
  readonly throughput = new ThroughputRing();
  private readonly engine: Engine;
  private readonly listRules: () => Promise<Rule[]>;
  private readonly listQuotas: () => Quota[];
  private readonly now: () => number;
  private readonly onError: (error: unknown) => void;
  private readonly timer: NodeJS.Timeout | null;
  private latest: ActivityReading | null = null;
  private previous: ActivityReading | null = null;
  private sampling = false;
  private readonly countReading: SharedReading;
  private lastCounts: ActivityCounts = { connections: 0, apps: 0 };
  private countsAskedAt = Number.NEGATIVE_INFINITY;

  constructor(options: ActivityServiceOptions) {
    this.engine = options.engine;
    this.listRules = options.listRules;
    this.listQuotas = options.listQuotas ?? (() => []);
    this.now = options.now ?? Date.now;
    this.onError = options.onError ?? (() => {});
    const intervalMs = options.intervalMs ?? 1000;
    // Without a timer (tests sample by hand) every request counts afresh.
    this.countReading = new SharedReading(() => this.count(), intervalMs > 0 ? intervalMs * 1.5 : 0, this.now);
    this.timer = intervalMs > 0 ? setInterval(() => void this.sample(), intervalMs) : null;
    this.timer?.unref();
  }

  /**
   * One reading of totals and per-process counters (an engine that is down leaves zeros), and of the
   * /status counts while they are asked for.
   */
  async sample(): Promise<void> {
    if (this.sampling) return; // a slow kernel read must not pile readings up
    this.sampling = true;
    try {
      await this.sampleTraffic();
      if (this.now() - this.countsAskedAt <= COUNTS_DEMAND_MS) await this.countReading.next();
    } finally {
      this.sampling = false;
    }
  }

  private async sampleTraffic(): Promise<void> {
    try {
      const atMs = this.now();
      if (this.engine.status().state !== 'OPEN') {
        this.throughput.resetBaseline();
        return;
      }
      const counters = await this.engine.readCounters();
      this.throughput.record(counters.bytesUp, counters.bytesDown, atMs);
      if (this.engine.processActivity !== undefined) {
        const processes = await this.engine.processActivity();
        this.previous = this.latest;
        this.latest = { atMs, byPid: new Map(processes.map((entry) => [entry.pid, entry])) };
      }
    } catch (error) {
      this.throughput.resetBaseline();
      this.onError(error);
    }
  }

  throughputWindow(count: number): ThroughputSample[] {
    return this.throughput.window(count, this.now());
  }

  async connections(): Promise<ConnectionView[]> {
    if (this.engine.connections === undefined || this.engine.status().state === 'UNAVAILABLE') return [];
    const entries: ConnectionEntry[] = await this.engine.connections();
    return entries.map((entry) => ({
      protocol: entry.protocol,
      local_address: entry.localAddress,
      local_port: entry.localPort,
      remote_address: hasPeer(entry) ? entry.remoteAddress : '',
      remote_port: entry.remotePort,
      state: entry.state,
      pid: entry.pid,
      app_path: entry.appPath,
    }));
  }

  /** One entry per running process that has moved bytes through the data plane or holds a socket. */
  async apps(): Promise<AppEntry[]> {
    const { apps } = await this.collect();
    return apps;
  }

  async app(pid: number): Promise<AppDetail | null> {
    const { apps, connections, rules } = await this.collect();
    const entry = apps.find((candidate) => candidate.pid === pid);
    if (entry === undefined) return null;
    return {
      ...entry,
      connection_list: connections.filter((connection) => connection.pid === pid),
      rules: rules.filter((rule) => coversApp(rule, entry.path)),
      quotas: this.listQuotas().filter((quota) => coversApp(quota, entry.path)),
    };
  }

  /** The counts /status shows: sockets, and running processes as /apps lists them (see the top). */
  async counts(): Promise<ActivityCounts> {
    this.countsAskedAt = this.now();
    await this.countReading.fresh();
    return this.lastCounts;
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
  }

  /** One read of the socket table into the /status counts; no rules, no /proc reads per process. */
  private async count(): Promise<void> {
    const connections = await this.readConnections();
    this.lastCounts = { connections: connections.length, apps: this.runningPids(socketsByPid(connections)).length };
  }

  private readConnections(): Promise<ConnectionView[]> {
    return this.connections().catch((error: unknown) => {
      this.onError(error);
      return [] as ConnectionView[];
    });
  }

  /** Processes that hold a socket or moved bytes, still running, by pid: the entries of /apps. */
  private runningPids(sockets: Map<number, unknown>): number[] {
    const pids = new Set<number>([...sockets.keys(), ...(this.latest?.byPid.keys() ?? [])]);
    return [...pids].sort((a, b) => a - b).filter(processAlive);
  }

  private async collect(): Promise<{ apps: AppEntry[]; connections: ConnectionView[]; rules: Rule[] }> {
    const [connections, rules] = await Promise.all([this.readConnections(), this.listRules()]);
    const enabled = rules.filter((rule) => rule.enabled);
    const sockets = socketsByPid(connections);
    const apps: AppEntry[] = [];
    for (const pid of this.runningPids(sockets)) {
      const identity = readProcessIdentity(pid, sockets.get(pid)?.appPath ?? '');
      const latest = this.latest?.byPid.get(pid);
      const earlier = this.previous?.byPid.get(pid);
      const seconds = this.latest !== null && this.previous !== null ? (this.latest.atMs - this.previous.atMs) / 1000 : 0;
      const rate = (now: number | undefined, before: number | undefined): number =>
        seconds > 0 && now !== undefined ? Math.max(0, Math.round((now - (before ?? 0)) / seconds)) : 0;
      const governing = governingRule(enabled.filter((rule) => coversApp(rule, identity.path)));
      apps.push({
        pid,
        name: identity.name,
        path: identity.path,
        bytes_up: latest?.bytesUp ?? 0,
        bytes_down: latest?.bytesDown ?? 0,
        rate_up: rate(latest?.bytesUp, earlier?.bytesUp),
        rate_down: rate(latest?.bytesDown, earlier?.bytesDown),
        connections: sockets.get(pid)?.count ?? 0,
        rule_id: governing?.id ?? null,
        blocked: governing?.action === 'BLOCK',
      });
    }
    return { apps, connections, rules };
  }
}
