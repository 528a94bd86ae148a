/**
 * An in-memory Engine for route tests, with switchable failure modes. It behaves like the contract says
 * the native engine does: ENGINE_DOWN while not OPEN, ENOENT when an app path does not exist, fingerprints
 * of what was applied, counters that restart on resetCounters.
 */
import fs from 'node:fs';
import {
  EngineError, fingerprintOf, type CompetingShaper, type ConnectionEntry, type Engine, type EngineCounters,
  type ProcessActivity, type EngineRule, type EngineSessionState,
  type EngineStatus, type ExecutableActivity, type InstalledRule, type PatternWatch, type RuleCounters,
  type WatchedIdentities,
} from '../../lib/engine/engine.js';
import { coversApp } from '../../lib/services/activity-service.js';

export class FakeEngine implements Engine {
  state: EngineSessionState = 'DOWN';
  /** What is "in the kernel": rule id -> the applied rule and its fingerprint. */
  readonly installed = new Map<number, { rule: EngineRule; fingerprint: string }>();
  readonly counters = new Map<number, RuleCounters>();
  totalBlocked = 0;
  /** Every call, in order, for assertions ("apply 3", "remove 4"). */
  readonly calls: string[] = [];
  /** When set, applyRule rejects with this code (after the ENOENT check). */
  applyFailure: { code: string; message: string } | null = null;
  /** When true, applyRule goes DOWN mid-call (the session dies during a write). */
  dieDuringApply = false;
  /** Live views: what the "kernel" reports. */
  connectionTable: ConnectionEntry[] = [];
  readonly activity = new Map<number, ProcessActivity>();
  /** Per-executable counters ("dev:ino" -> cumulative traffic), for quotas; cleared by open(). */
  readonly executables = new Map<string, ExecutableActivity>();
  shapers: CompetingShaper[] = [];
  /** Executables the "kernel" saw run ("dev:ino" -> path), what pattern watches learn from. */
  readonly executablePaths = new Map<string, { dev: number; ino: number; path: string }>();
  /** The last watch list the service handed over. */
  watches: PatternWatch[] = [];
  /** Totals of traffic no rule matched (the data plane counts all traffic). */
  unmatched = { up: 0, down: 0 };
  /** The next N open() calls fail (a data plane that cannot re-attach yet). */
  openFailures = 0;
  opens = 0;

  async open(): Promise<void> {
    this.calls.push('open');
    if (this.openFailures > 0) {
      this.openFailures--;
      throw new EngineError('BPF_ATTACH', 'fake engine cannot attach yet');
    }
    this.opens++;
    this.state = 'OPEN';
    // The kernel's counters start from zero with every open.
    this.executables.clear();
    this.counters.clear();

  }

  async close(): Promise<void> {
    this.calls.push('close');
    this.state = 'DOWN';
    this.installed.clear();
  }

  status(): EngineStatus {
    const open = this.state === 'OPEN';
    return {
      platform: process.platform,
      filtering: open,
      shaping: open,
      state: this.state,
      detail: open ? null : `fake engine is ${this.state}`,
    };
  }

  async applyRule(rule: EngineRule): Promise<void> {
    this.calls.push(`apply ${rule.id}`);
    this.requireOpen();
    if (this.dieDuringApply) {
      this.state = 'DOWN';
      this.installed.clear();
      throw new EngineError('ENGINE_DOWN', 'session lost during apply');
    }
    // Like the native engine: only EXACT_PATH resolves the file; patterns wait for matching executables.
    const needsFile = rule.appPath !== '' && rule.matchMode === 'EXACT_PATH';
    if (needsFile && !fs.existsSync(rule.appPath)) {
      this.installed.delete(rule.id);
      this.counters.delete(rule.id);
      throw new EngineError('ENOENT', `no such file: ${rule.appPath}`, 2);
    }
    if (this.applyFailure !== null) throw new EngineError(this.applyFailure.code, this.applyFailure.message);
    this.installed.set(rule.id, { rule: { ...rule }, fingerprint: fingerprintOf(rule) });
    if (rule.resetCounters || !this.counters.has(rule.id)) {
      this.counters.set(rule.id, { id: rule.id, bytesUp: 0, bytesDown: 0, blocked: 0 });
    }
  }

  async removeRule(id: number): Promise<void> {
    this.calls.push(`remove ${id}`);
    this.requireOpen();
    this.installed.delete(id);
    this.counters.delete(id);
  }

  async installedRules(): Promise<InstalledRule[]> {
    this.requireOpen();
    return [...this.installed].map(([id, entry]) => ({ id, fingerprint: entry.fingerprint }));
  }

  async readCounters(): Promise<EngineCounters> {
    this.requireOpen();
    const rules = [...this.counters.values()].map((entry) => ({ ...entry }));
    return {
      rules,
      bytesUp: rules.reduce((sum, entry) => sum + entry.bytesUp, this.unmatched.up),
      bytesDown: rules.reduce((sum, entry) => sum + entry.bytesDown, this.unmatched.down),
      blocked: this.totalBlocked,
    };
  }

  // Like the native engine: the socket table is the OS's, readable whether or not the data plane is up.
  async connections(): Promise<ConnectionEntry[]> {
    return this.connectionTable.map((entry) => ({ ...entry }));
  }

  async processActivity(): Promise<ProcessActivity[]> {
    this.requireOpen();
    return [...this.activity.values()].map((entry) => ({ ...entry }));
  }

  async appActivity(): Promise<ExecutableActivity[]> {
    this.requireOpen();
    return [...this.executables.values()].map((entry) => ({ ...entry }));
  }

  async watchPatterns(watches: PatternWatch[]): Promise<WatchedIdentities[]> {
    this.requireOpen();
    this.watches = watches.map((watch) => ({ ...watch }));
    const seen = [...this.executablePaths.values()];
    return watches.map((watch) => ({
      id: watch.id,
      identities: seen
        .filter((exe) => coversApp({ app_path: watch.path, match_mode: watch.matchMode }, exe.path))
        .map(({ dev, ino }) => ({ dev, ino })),
    }));
  }

  async competingShapers(): Promise<CompetingShaper[]> {
    return this.shapers.map((entry) => ({ ...entry }));
  }

  // ---- test controls -----------------------------------------------------------------------------

  /** Simulates traffic matched by a rule (and blocked packets counted in the total). */
  addTraffic(id: number, traffic: { up?: number; down?: number; blocked?: number }): void {
    const entry = this.counters.get(id) ?? { id, bytesUp: 0, bytesDown: 0, blocked: 0 };
    entry.bytesUp += traffic.up ?? 0;
    entry.bytesDown += traffic.down ?? 0;
    entry.blocked += traffic.blocked ?? 0;
    this.totalBlocked += traffic.blocked ?? 0;
    this.counters.set(id, entry);
  }

  /** Simulates traffic of one executable identity (kernel dev encoding, inode). */
  addAppTraffic(identity: { dev: number; ino: number }, traffic: { up?: number; down?: number }): void {
    const key = `${identity.dev}:${identity.ino}`;
    const entry = this.executables.get(key) ?? { dev: identity.dev, ino: identity.ino, bytesUp: 0, bytesDown: 0, blocked: 0 };
    entry.bytesUp += traffic.up ?? 0;
    entry.bytesDown += traffic.down ?? 0;
    this.executables.set(key, entry);
  }

  /** Simulates an exec of the executable at `path` (pattern watches learn it). */
  execApp(identity: { dev: number; ino: number }, path: string): void {
    this.executablePaths.set(`${identity.dev}:${identity.ino}`, { ...identity, path });
  }

  /** Simulates kernel state drifting from the service's: a rule lost, altered, or left behind. */
  dropInstalled(id: number): void {
    this.installed.delete(id);
  }

  installForeign(id: number, rule: Partial<EngineRule> = {}): void {
    const foreign: EngineRule = {
      id, action: 'BLOCK', direction: 'BOTH', protocol: 'ANY', remoteAddress: '', remotePort: 0,
      rateDownBytesPerSec: null, rateUpBytesPerSec: null, limitScope: 'PER_APP', matchMode: 'EXACT_PATH',
      appPath: '', priority: 1, resetCounters: false, ...rule,
    };
    this.installed.set(id, { rule: foreign, fingerprint: fingerprintOf(foreign) });
  }

  goDown(): void {
    this.state = 'DOWN';
    this.installed.clear();
  }

  private requireOpen(): void {
    if (this.state !== 'OPEN') throw new EngineError('ENGINE_DOWN', `fake engine is ${this.state}`);
  }
}

/** A fake engine that is already open. */
export async function openFakeEngine(): Promise<FakeEngine> {
  const engine = new FakeEngine();
  await engine.open();
  return engine;
}
