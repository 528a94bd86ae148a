/**
 * Quotas: the SQLite table is the truth for drafts and the persisted counting state; this service adds the
 * bytes counted since the last flush, samples the kernel's per-executable counters, and enforces
 * `on_exceed` through internal engine rules (ids >= INTERNAL_RULE_ID_BASE, invisible to /rules).
 *
 * Counting: the data plane keeps cumulative up/down bytes per executable identity ({dev, ino} of the
 * process image). Each sample takes the difference to the previous reading of the same identity and adds
 * it to every enabled quota that covers that identity, in the quota's direction: EXACT_PATH quotas resolve
 * their app_path (stat) to one identity; FILENAME/DIRECTORY quotas are pattern watches of the engine,
 * which learns every identity the pattern covers from running processes and exec notifications.
 * Counters that went backwards (engine re-opened, LRU eviction) restart from zero.
 *
 * Writes, samples and flushes run through one queue, so an API reset never interleaves with a sample.
 */
import { SerialQueue } from './serial-queue.js';
import fs from 'node:fs';
import type { FastifyBaseLogger } from 'fastify';
import {
  EngineError, fingerprintOf, INTERNAL_RULE_ID_BASE, isInternalRuleId,
  type Engine, type EngineRule, type PatternWatch,
} from '../engine/engine.js';
import { ProblemError } from '../http/problem.js';
import type { Quota, QuotaDraft } from '../schemas/quota.js';
import type { QuotaPeriodState, QuotasStore, StoredQuota } from '../store/quotas-store.js';
import type { EventBus } from './event-bus.js';
import { quotaSlots, type SlotGate } from './clamp-slots.js';
import { periodOver, periodStrings } from './quota-period.js';
import { etagOf } from './rule-service.js';
import { requireIfMatch, type IfMatch, type WriteConditions } from '../http/if-match.js';

/** Sampling period: half a second keeps the overshoot past the limit under one second of traffic. */
export const QUOTA_SAMPLE_INTERVAL_MS = 500;
/** How often counted bytes are written to SQLite (a crash loses at most this much counting). */
export const QUOTA_FLUSH_INTERVAL_MS = 2_000;
/** Priority of quota actions: the top of the user's range, so they win over the user's ALLOW/LIMIT rules. */
const QUOTA_ACTION_PRIORITY = 10_000;
const MAX_QUOTA_ID = INTERNAL_RULE_ID_BASE - 1;

export { etagOf };

export interface QuotaServiceOptions {
  engine: Engine;
  store: QuotasStore;
  events: EventBus;
  log: FastifyBaseLogger;
  /** Clamp-slot cap of quotas (licensing); none = no cap. */
  slots?: SlotGate;
  now?: () => Date;
  /** 0 = no timer (tests call `sample()`). */
  sampleIntervalMs?: number;
  /** 0 = no timer (tests call `flush()`). */
  flushIntervalMs?: number;
}

/** Kernel encoding of a device number, `(major << 20) | minor`, from stat()'s st_dev (glibc's encoding). */
export function kernelDevOf(statDev: bigint): number {
  const major = ((statDev >> 8n) & 0xfffn) | ((statDev >> 32n) & ~0xfffn);
  const minor = (statDev & 0xffn) | ((statDev >> 12n) & ~0xffn);
  return Number((major << 20n) | minor);
}

function identityKey(dev: number, ino: number): string {
  return `${dev}:${ino}`;
}

export function parseQuotaId(raw: string): number {
  if (!/^[1-9]\d{0,9}$/.test(raw) || Number(raw) > MAX_QUOTA_ID) throw notFound(raw);
  return Number(raw);
}

function notFound(id: string | number): ProblemError {
  return new ProblemError(404, `quota ${id} does not exist`);
}

export function internalRuleIdOf(quotaId: number): number {
  return INTERNAL_RULE_ID_BASE + quotaId;
}

/** The engine rule that enforces an exceeded quota's action, or null when the action is only an event. */
export function actionRuleOf(quota: StoredQuota): EngineRule | null {
  if (quota.on_exceed === 'NOTIFY') return null;
  const limit = quota.on_exceed === 'LIMIT';
  const rate = quota.limit_rate_bytes_per_sec;
  return {
    id: internalRuleIdOf(quota.id),
    action: limit ? 'LIMIT' : 'BLOCK',
    direction: quota.direction,
    protocol: 'ANY',
    remoteAddress: '',
    remotePort: 0,
    rateDownBytesPerSec: limit && quota.direction !== 'OUTBOUND' ? rate : null,
    rateUpBytesPerSec: limit && quota.direction !== 'INBOUND' ? rate : null,
    limitScope: 'PER_APP',
    matchMode: quota.match_mode,
    appPath: quota.app_path,
    priority: QUOTA_ACTION_PRIORITY,
    resetCounters: false,
  };
}

function periodStateOf(quota: StoredQuota): QuotaPeriodState {
  return {
    used_bytes: quota.used_bytes, period_start: quota.period_start, period_end: quota.period_end,
    exceeded: quota.exceeded, exceeded_at: quota.exceeded_at,
  };
}

export class QuotaService {
  private readonly engine: Engine;
  private readonly store: QuotasStore;
  private readonly events: EventBus;
  private readonly log: FastifyBaseLogger;
  private readonly slots: SlotGate | undefined;
  private readonly now: () => Date;
  /** Identities learned per pattern quota (FILENAME/DIRECTORY), from the last sample. */
  private watched = new Map<number, string[]>();
  private watchUnsupportedLogged = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly queue = new SerialQueue();
  /** Bytes counted since the last flush, per quota id. */
  private readonly pending = new Map<number, number>();
  /** Last cumulative reading per identity; null = no valid baseline (start, or engine re-opened). */
  private baseline: Map<string, { up: number; down: number }> | null = null;
  private lastRestarts: number | undefined;
  private closed = false;
  /** A sample is queued or running: a slow kernel read must not pile samples up behind it. */
  private sampleQueued = false;

  constructor(options: QuotaServiceOptions) {
    this.engine = options.engine;
    this.store = options.store;
    this.events = options.events;
    this.log = options.log;
    this.slots = options.slots;
    this.now = options.now ?? (() => new Date());
    const sampleMs = options.sampleIntervalMs ?? QUOTA_SAMPLE_INTERVAL_MS;
    const flushMs = options.flushIntervalMs ?? QUOTA_FLUSH_INTERVAL_MS;
    if (sampleMs > 0) this.timers.push(setInterval(() => void this.sample().catch(() => {}), sampleMs));
    if (flushMs > 0) this.timers.push(setInterval(() => void this.flush().catch(() => {}), flushMs));
    for (const timer of this.timers) timer.unref();
  }

  /** Start-up: roll over periods that ended while the service was not running, install pending actions. */
  start(): Promise<void> {
    return this.exclusive(async () => {
      this.rollOverEnded();
      await this.syncActions();
    });
  }

  // ---- reads -------------------------------------------------------------------------------------

  list(): Quota[] {
    return this.store.list().map((quota) => this.present(quota));
  }

  get(id: number): Quota {
    const quota = this.store.get(id);
    if (quota === undefined) throw notFound(id);
    return this.present(quota);
  }

  /** Quotas that count the executable at `appPath` (for /apps/{pid}). */
  forApp(appPath: string): Quota[] {
    return this.list().filter((quota) => quota.app_path === appPath);
  }

  // ---- writes ------------------------------------------------------------------------------------

  create(draft: QuotaDraft, groupId: string | null = null): Promise<Quota> {
    return this.exclusive(async () => {
      this.requirePatternSupport(draft);
      this.slots?.requireSlots(quotaSlots(draft), 'this quota');
      const state: QuotaPeriodState = {
        used_bytes: 0, ...periodStrings(draft.period, this.now()), exceeded: false, exceeded_at: null,
      };
      const stored = this.store.insert(draft, state, this.timestamp(), groupId);
      await this.syncWatches();
      return this.present(stored);
    });
  }

  /**
   * PUT: replace the draft. The count of the current period is kept (raising the limit should not forgive
   * what was used); a new period kind starts a new period. An exceeded quota whose new limit is above the
   * count is no longer exceeded, and its action is lifted; one that is still over gets the new action.
   */
  update(id: number, draft: QuotaDraft, conditions: WriteConditions): Promise<Quota> {
    return this.exclusive(async () => {
      const current = this.store.get(id);
      if (current === undefined) throw notFound(id);
      if (current.group_id !== null) {
        throw new ProblemError(409, `quota ${id} belongs to group ${current.group_id}; change it through the group`);
      }
      requireIfMatch(conditions.ifMatch, etagOf(current), `quota ${id}`);
      if (conditions.expectedRevision !== undefined && conditions.expectedRevision !== current.revision) {
        throw new ProblemError(409, `revision ${conditions.expectedRevision} is not the current revision of quota ${id} (${current.revision}); read the quota and retry`);
      }
      this.requirePatternSupport(draft);
      this.slots?.requireSlots(quotaSlots(draft) - quotaSlots(current), `quota ${id}`);
      this.flushNow();
      const fresh = this.store.get(id)!;
      const state = periodStateOf(fresh);
      if (draft.period !== fresh.period) Object.assign(state, periodStrings(draft.period, this.now()));
      if (state.exceeded && state.used_bytes < draft.limit_bytes) {
        state.exceeded = false;
        state.exceeded_at = null;
      }
      const updated = this.store.replace(id, draft, state, this.timestamp());
      // A count that the new limit puts over is an exceed of this period, with its one event.
      this.checkExceeded(updated);
      await this.syncWatches();
      await this.syncActions();
      return this.present(this.store.get(id)!);
    });
  }

  /** DELETE; `ifMatch` (the parsed header), when given, must match the current revision. */
  delete(id: number, ifMatch?: IfMatch): Promise<void> {
    return this.exclusive(async () => {
      const current = this.store.get(id);
      if (current === undefined) throw notFound(id);
      if (current.group_id !== null) {
        throw new ProblemError(409, `quota ${id} belongs to group ${current.group_id}; remove it through the group`);
      }
      requireIfMatch(ifMatch, etagOf(current), `quota ${id}`);
      this.store.delete(id);
      this.pending.delete(id);
      await this.syncActions();
    });
  }

  /** Group uninstall: removes every quota of the group and lifts their actions. Returns how many. */
  removeGroup(groupId: string): Promise<number> {
    return this.exclusive(async () => {
      const owned = this.store.list().filter((quota) => quota.group_id === groupId);
      for (const quota of owned) {
        this.store.delete(quota.id);
        this.pending.delete(quota.id);
      }
      await this.syncActions();
      return owned.length;
    });
  }

  /** Zeroes the counter of the current period and lifts the action. */
  reset(id: number): Promise<Quota> {
    return this.exclusive(async () => {
      const current = this.store.get(id);
      if (current === undefined) throw notFound(id);
      this.pending.delete(id);
      this.store.setPeriodState(id, { ...periodStateOf(current), used_bytes: 0, exceeded: false, exceeded_at: null });
      await this.syncActions();
      this.events.emit('quota_reset', { quota_id: String(id), name: current.name, reason: 'api' });
      return this.present(this.store.get(id)!);
    });
  }

  // ---- counting ----------------------------------------------------------------------------------

  /** One sample: count, roll periods over, apply actions of quotas that just reached their limit. */
  sample(): Promise<void> {
    if (this.sampleQueued) return this.queue.idle();
    this.sampleQueued = true;
    return this.exclusive(async () => {
      this.sampleQueued = false;
      if (this.closed) return;
      this.rollOverEnded();
      try {
        await this.count();
      } catch (error) {
        this.baseline = null;
        if (!(error instanceof EngineError && error.code === 'ENGINE_DOWN')) this.log.warn({ err: error }, 'quota sample failed');
      }
      for (const quota of this.store.list()) this.checkExceeded(quota);
      await this.syncActions();
    });
  }

  /** Writes counted bytes to SQLite. */
  flush(): Promise<void> {
    return this.exclusive(async () => this.flushNow());
  }

  /** Stops the timers, takes a last sample while the engine is still open, and flushes. */
  async close(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    await this.sample().catch(() => {});
    this.closed = true;
    await this.flush();
  }

  // ---- internals ---------------------------------------------------------------------------------

  private async count(): Promise<void> {
    const status = this.engine.status();
    if (status.state !== 'OPEN' || this.engine.appActivity === undefined) {
      this.baseline = null; // a re-opened engine counts from zero again
      return;
    }
    if (status.restarts !== undefined && status.restarts !== this.lastRestarts) {
      if (this.lastRestarts !== undefined) this.baseline = null;
      this.lastRestarts = status.restarts;
    }
    // Watches first: an identity learned now has its bytes since the previous reading counted below.
    await this.syncWatches();
    const readings = await this.engine.appActivity();
    // Without a baseline (first sample, engine re-opened) everything since open() is new: the service
    // opened the engine, so those bytes were all moved while it was watching.
    const previous = this.baseline ?? new Map<string, { up: number; down: number }>();
    const next = new Map<string, { up: number; down: number }>();
    const deltas = new Map<string, { up: number; down: number }>();
    for (const reading of readings) {
      const key = identityKey(reading.dev, reading.ino);
      const before = previous.get(key);
      // A counter that went backwards restarted (LRU eviction, re-open): all of it is new.
      const up = before === undefined || reading.bytesUp < before.up ? reading.bytesUp : reading.bytesUp - before.up;
      const down = before === undefined || reading.bytesDown < before.down ? reading.bytesDown : reading.bytesDown - before.down;
      next.set(key, { up: reading.bytesUp, down: reading.bytesDown });
      if (up > 0 || down > 0) deltas.set(key, { up, down });
    }
    this.baseline = next;
    if (deltas.size === 0) return;
    for (const quota of this.store.list()) {
      if (!quota.enabled) continue;
      let bytes = 0;
      for (const key of this.identitiesOf(quota)) {
        const delta = deltas.get(key);
        if (delta === undefined) continue;
        bytes += quota.direction === 'INBOUND' ? delta.down : quota.direction === 'OUTBOUND' ? delta.up : delta.up + delta.down;
      }
      if (bytes > 0) this.pending.set(quota.id, (this.pending.get(quota.id) ?? 0) + bytes);
    }
  }

  /** The executable identities a quota counts now. */
  private identitiesOf(quota: StoredQuota): string[] {
    if (quota.match_mode !== 'EXACT_PATH') return this.watched.get(quota.id) ?? [];
    const key = this.identityOf(quota.app_path);
    return key === null ? [] : [key];
  }

  /**
   * Tells the engine which patterns the enabled FILENAME/DIRECTORY quotas need watched and keeps what it
   * learned. A down engine keeps the last answer (the next sample after it returns asks again).
   */
  private async syncWatches(): Promise<void> {
    if (this.engine.watchPatterns === undefined || this.engine.status().state !== 'OPEN') return;
    const watches: PatternWatch[] = this.store.list()
      .filter((quota) => quota.enabled && quota.match_mode !== 'EXACT_PATH')
      .map((quota) => ({ id: quota.id, matchMode: quota.match_mode as PatternWatch['matchMode'], path: quota.app_path }));
    try {
      const learned = await this.engine.watchPatterns(watches);
      this.watched = new Map(learned.map((entry) => [entry.id, entry.identities.map(({ dev, ino }) => identityKey(dev, ino))]));
    } catch (error) {
      if (error instanceof EngineError && error.code === 'ENGINE_DOWN') return;
      if (error instanceof EngineError && error.code === 'UNSUPPORTED') {
        if (!this.watchUnsupportedLogged) this.log.warn({ err: error }, 'FILENAME/DIRECTORY quotas cannot count on this engine');
        this.watchUnsupportedLogged = true;
        return;
      }
      this.log.warn({ err: error }, 'updating the pattern watches of quotas failed');
    }
  }

  /** 400 for a FILENAME/DIRECTORY quota on an engine that cannot watch executables by pattern. */
  private requirePatternSupport(draft: QuotaDraft): void {
    if (draft.match_mode === 'EXACT_PATH' || this.engine.watchPatterns !== undefined) return;
    throw new ProblemError(400, `match_mode ${draft.match_mode} needs an engine that watches executables by pattern; this one cannot, use EXACT_PATH`, {
      errors: [{ field: 'match_mode', message: 'is not supported for quotas by this engine' }],
    });
  }

  /** The executable's kernel identity now (stat each time: a replaced file is a new identity). */
  private identityOf(appPath: string): string | null {
    try {
      const stat = fs.statSync(appPath, { bigint: true });
      return identityKey(kernelDevOf(stat.dev), Number(stat.ino));
    } catch {
      return null;
    }
  }

  private usedBytes(quota: StoredQuota): number {
    return quota.used_bytes + (this.pending.get(quota.id) ?? 0);
  }

  /** Marks a quota that reached its limit, persists that at once and sends the period's one event. */
  private checkExceeded(quota: StoredQuota): void {
    if (!quota.enabled || quota.exceeded) return;
    const used = this.usedBytes(quota);
    if (used < quota.limit_bytes) return;
    const state: QuotaPeriodState = { ...periodStateOf(quota), used_bytes: used, exceeded: true, exceeded_at: this.timestamp() };
    this.store.setPeriodState(quota.id, state);
    this.pending.delete(quota.id);
    this.events.emit('quota_exceeded', {
      quota_id: String(quota.id), name: quota.name, used_bytes: used, limit_bytes: quota.limit_bytes,
      on_exceed: quota.on_exceed, period_end: quota.period_end,
    });
  }

  /** Quotas whose period ended start a new one (at start-up too: the service may have been off for days). */
  private rollOverEnded(): void {
    const now = this.now();
    for (const quota of this.store.list()) {
      if (!periodOver(quota.period_end, now)) continue;
      this.pending.delete(quota.id);
      this.store.setPeriodState(quota.id, {
        used_bytes: 0, ...periodStrings(quota.period, now), exceeded: false, exceeded_at: null,
      });
      this.events.emit('quota_reset', { quota_id: String(quota.id), name: quota.name, reason: 'period' });
    }
  }

  /**
   * Makes the engine's internal rules what the quotas want: an action rule for every enabled, exceeded
   * quota with BLOCK/LIMIT, nothing else in the internal range. Reads back from the kernel, so a rule lost
   * with an engine re-open is put back by the next sample.
   */
  private async syncActions(): Promise<void> {
    if (this.engine.status().state !== 'OPEN') return;
    const wanted = new Map<number, EngineRule>();
    for (const quota of this.store.list()) {
      if (!quota.enabled || !quota.exceeded) continue;
      const rule = actionRuleOf(quota);
      if (rule !== null) wanted.set(rule.id, rule);
    }
    try {
      const installed = new Map((await this.engine.installedRules())
        .filter((entry) => isInternalRuleId(entry.id))
        .map((entry) => [entry.id, entry.fingerprint]));
      for (const [id, rule] of wanted) {
        if (installed.get(id) === fingerprintOf(rule)) continue;
        try {
          await this.engine.applyRule(rule);
        } catch (error) {
          if (error instanceof EngineError && error.code === 'ENGINE_DOWN') throw error;
          this.log.warn({ err: error, ruleId: id }, 'cannot install a quota action; retrying with the next sample');
        }
      }
      for (const id of installed.keys()) {
        if (!wanted.has(id)) await this.engine.removeRule(id);
      }
    } catch (error) {
      if (!(error instanceof EngineError && error.code === 'ENGINE_DOWN')) this.log.warn({ err: error }, 'syncing quota actions failed');
    }
  }

  private flushNow(): void {
    if (this.pending.size === 0) return;
    this.store.addUsage(this.pending);
    this.pending.clear();
  }

  private present(quota: StoredQuota): Quota {
    return {
      id: String(quota.id),
      name: quota.name,
      app_path: quota.app_path,
      match_mode: quota.match_mode,
      direction: quota.direction,
      limit_bytes: quota.limit_bytes,
      period: quota.period,
      on_exceed: quota.on_exceed,
      limit_rate_bytes_per_sec: quota.limit_rate_bytes_per_sec,
      enabled: quota.enabled,
      revision: quota.revision,
      group_id: quota.group_id,
      used_bytes: this.usedBytes(quota),
      period_start: quota.period_start,
      period_end: quota.period_end,
      exceeded: quota.exceeded,
      exceeded_at: quota.exceeded_at,
      created_at: quota.created_at,
      updated_at: quota.updated_at,
    };
  }

  private timestamp(): string {
    return this.now().toISOString();
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    return this.queue.run(work);
  }
}
