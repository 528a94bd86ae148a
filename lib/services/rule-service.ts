/**
 * Rules: the SQLite table is the truth, the engine holds the enabled ones. Every write (API, watcher,
 * reconcile) runs through one queue, so the database and the kernel never see two writers interleave.
 *
 * Consistency: a write that needs the engine is refused (503) while the engine is not OPEN, and if the
 * engine reports ENGINE_DOWN during the write the database change is undone: a failed request changes
 * nothing. Any other engine error is a property of the rule (ERROR, or PENDING for a missing file) and the
 * write stands, so the user sees the rule and why it is not enforced.
 */
import { SerialQueue } from './serial-queue.js';
import fs from 'node:fs';
import type { FastifyBaseLogger } from 'fastify';
import { EngineError, fingerprintOf, isInternalRuleId, type Engine, type EngineRule, type EngineStatus, type RuleCounters } from '../engine/engine.js';
import { ProblemError } from '../http/problem.js';
import { requireIfMatch, type IfMatch, type WriteConditions } from '../http/if-match.js';
import type { ReconcileResult, Rule, RuleDraft, SyncState } from '../schemas/rule.js';
import type { CounterValues, RulesStore, StoredRule } from '../store/rules-store.js';
import type { AppPathWatcher } from './app-path-watcher.js';
import type { EventBus } from './event-bus.js';
import { ruleSlots, type SlotGate } from './clamp-slots.js';
import { RuleCounterBook } from './rule-counters.js';
import { SharedReading } from './shared-reading.js';

/** Seconds a client should wait before retrying a write the engine could not take. */
export const ENGINE_RETRY_AFTER_SECONDS = 5;
const MAX_RULE_ID = 2 ** 31 - 1;
/**
 * How old the kernel counters that GET /rules shows may be: concurrent and repeated GETs share one kernel
 * read per period instead of each dumping every rule's counters (the cost grows with the table).
 */
export const COUNTER_MAX_AGE_MS = 250;

interface SyncOutcome {
  state: SyncState;
  error: string | null;
}

/**
 * What a group write does to the group's own rows: inside the rules' transaction (with the group's rules
 * it replaced, already deleted there), and to undo it.
 */
export interface GroupWriteHooks<T> {
  persist(ruleIds: T, replaced: readonly StoredRule[]): void;
  undo(): void;
}

export interface RuleServiceOptions {
  engine: Engine;
  store: RulesStore;
  watcher: AppPathWatcher;
  log: FastifyBaseLogger;
  /** Where rule_sync_error goes; optional so the service can be used without a bus. */
  events?: EventBus;
  /** Clamp-slot cap of LIMIT rules (licensing); none = no cap. */
  slots?: SlotGate;
  now?: () => Date;
  /** See COUNTER_MAX_AGE_MS; 0 = every GET reads the kernel (tests that count traffic step by step). */
  counterMaxAgeMs?: number;
  /** Milliseconds, for the age of counter readings; tests drive a fake clock. */
  clockMs?: () => number;
  /**
   * The engine's state as /status reports it (the supervisor's view: RECOVERING while it re-attaches),
   * for the detail of a 503; the engine's own status() by default.
   */
  engineStatus?: () => EngineStatus;
}

export function toEngineRule(rule: StoredRule, resetCounters: boolean): EngineRule {
  return {
    id: rule.id,
    action: rule.action,
    direction: rule.direction,
    protocol: rule.protocol,
    remoteAddress: rule.remote_address,
    remotePort: rule.remote_port,
    rateDownBytesPerSec: rule.rate_limit_down_bytes_per_sec,
    rateUpBytesPerSec: rule.rate_limit_up_bytes_per_sec,
    limitScope: rule.limit_scope,
    matchMode: rule.match_mode,
    appPath: rule.app_path,
    priority: rule.priority,
    resetCounters,
  };
}

function isEngineDown(error: unknown): boolean {
  return error instanceof EngineError && error.code === 'ENGINE_DOWN';
}

/** Parses a path id; anything that is not a rule id we could have issued is simply not found. */
export function parseRuleId(raw: string): number {
  if (!/^[1-9]\d{0,9}$/.test(raw) || Number(raw) > MAX_RULE_ID) throw notFound(raw);
  return Number(raw);
}

function notFound(id: string | number): ProblemError {
  return new ProblemError(404, `rule ${id} does not exist`);
}

/** An ETag per revision; strong, since the revision changes with every byte of the rule's draft. */
export function etagOf(rule: { revision: number }): string {
  return `"${rule.revision}"`;
}

export class RuleService {
  private readonly engine: Engine;
  private readonly store: RulesStore;
  private readonly watcher: AppPathWatcher;
  private readonly log: FastifyBaseLogger;
  private readonly events: EventBus | undefined;
  private readonly slots: SlotGate | undefined;
  private readonly now: () => Date;
  private readonly engineStatus: () => EngineStatus;
  private readonly queue = new SerialQueue();
  private readonly counters: RuleCounterBook;
  /** Kernel counter readings: GETs share recent ones, writes wait for a new one. */
  private readonly counterReading: SharedReading;
  private summaryOf: { rules: readonly StoredRule[]; value: { activeRules: number; monitoredApps: number } } | null = null;
  private closed = false;

  constructor(options: RuleServiceOptions) {
    this.engine = options.engine;
    this.store = options.store;
    this.watcher = options.watcher;
    this.log = options.log;
    this.events = options.events;
    this.slots = options.slots;
    this.now = options.now ?? (() => new Date());
    this.engineStatus = options.engineStatus ?? (() => this.engine.status());
    this.counters = new RuleCounterBook(options.store);
    this.counterReading = new SharedReading(() => this.sampleCounters(), options.counterMaxAgeMs ?? COUNTER_MAX_AGE_MS, options.clockMs);
  }

  // ---- reads -------------------------------------------------------------------------------------

  async list(): Promise<Rule[]> {
    await this.counterReading.fresh();
    return this.store.list().map((rule) => present(rule, this.counters.total(rule.id)));
  }

  async get(id: number): Promise<Rule> {
    await this.counterReading.fresh();
    const rule = this.store.get(id);
    if (rule === undefined) throw notFound(id);
    return present(rule, this.counters.total(id));
  }

  /** Figures for /status; computed again only after a write (the store hands out a new list then). */
  summary(): { activeRules: number; monitoredApps: number } {
    const rules = this.store.list();
    if (this.summaryOf?.rules !== rules) {
      const enabled = rules.filter((rule) => rule.enabled);
      this.summaryOf = {
        rules,
        value: {
          activeRules: enabled.filter((rule) => rule.sync_state === 'SYNCED').length,
          monitoredApps: new Set(enabled.filter((rule) => rule.app_path !== '').map((rule) => rule.app_path)).size,
        },
      };
    }
    return this.summaryOf.value;
  }

  // ---- writes ------------------------------------------------------------------------------------

  /** An enabled rule goes into the kernel first, under the id its row will get (see applyThenWrite). */
  create(draft: RuleDraft): Promise<Rule> {
    return this.exclusive(async () => {
      const slots = ruleSlots(draft);
      if (draft.enabled) this.requireEngine();
      this.slots?.requireSlots(slots, 'this rule');
      const now = this.timestamp();
      if (!draft.enabled) return this.presentFresh(this.store.insert(draft, 'DISABLED', now).id);
      const candidate: StoredRule = {
        ...draft, id: this.store.nextId(), revision: 1, sync_state: 'PENDING', sync_error: null, group_id: null, created_at: now, updated_at: now,
      };
      const stored = await this.applyThenWrite(candidate, undefined, (outcome) => {
        // Again, right before the write: a quota may have taken the last slot during the engine's await.
        this.slots?.requireSlots(slots, 'this rule');
        return this.store.insert(draft, outcome.state, now, null, { id: candidate.id, syncError: outcome.error });
      });
      return this.presentFresh(stored.id);
    });
  }

  /**
   * PUT: replace the draft. `ifMatch` (header) or `expectedRevision` (body) must name the current
   * revision when given; without either the replace is unconditional.
   */
  update(id: number, draft: RuleDraft, conditions: WriteConditions): Promise<Rule> {
    return this.exclusive(async () => {
      const current = this.store.get(id);
      if (current === undefined) throw notFound(id);
      this.refuseGroupRule(current);
      requireIfMatch(conditions.ifMatch, etagOf(current), `rule ${id}`);
      if (conditions.expectedRevision !== undefined && conditions.expectedRevision !== current.revision) {
        throw new ProblemError(409, `revision ${conditions.expectedRevision} is not the current revision of rule ${id} (${current.revision}); read the rule and retry`);
      }
      if (current.enabled || draft.enabled) this.requireEngine();
      const slots = ruleSlots(draft) - ruleSlots(current);
      this.slots?.requireSlots(slots, `rule ${id}`);
      const now = this.timestamp();
      const next: StoredRule = { ...current, ...draft, revision: current.revision + 1, sync_error: null, updated_at: now };
      await this.applyThenWrite(next, current, (outcome) => {
        this.slots?.requireSlots(slots, `rule ${id}`);
        return this.store.replace(id, draft, outcome.state, now, outcome.error);
      });
      // Only now: the kernel's counters were reset by the apply (or went with the removal).
      this.counters.zero(id);
      return this.presentFresh(id);
    });
  }

  /** DELETE; `ifMatch` (the parsed header), when given, must match the current revision. */
  delete(id: number, ifMatch?: IfMatch): Promise<void> {
    return this.exclusive(async () => {
      const current = this.store.get(id);
      if (current === undefined) throw notFound(id);
      this.refuseGroupRule(current);
      requireIfMatch(ifMatch, etagOf(current), `rule ${id}`);
      if (current.enabled) this.requireEngine();
      if (this.engineOpen()) {
        try {
          await this.engine.removeRule(id);
        } catch (error) {
          if (isEngineDown(error)) throw this.engineDownProblem(error);
          const message = (error as Error).message;
          this.store.setSyncState(id, current.revision, 'ERROR', `removal failed: ${message}`);
          this.announceSyncError(current, `removal failed: ${message}`);
          throw new ProblemError(500, `the engine could not remove rule ${id} (${message}); the rule is kept with sync_state ERROR`);
        }
      }
      this.watcher.unwatch(id);
      this.store.delete(id);
      this.counters.drop(id);
    });
  }

  /** Re-syncs one rule now (the engine may have lost it, or the reason for an ERROR may be gone). */
  retry(id: number): Promise<Rule> {
    return this.exclusive(async () => {
      const current = this.store.get(id);
      if (current === undefined) throw notFound(id);
      this.requireEngine();
      await this.counterReading.next(); // a re-apply of a rule the engine lost starts a new kernel life
      try {
        if (current.enabled) await this.applyEnabled(current, false);
        else await this.removeDisabled(current);
      } catch (error) {
        throw this.engineDownProblem(error);
      }
      return this.presentFresh(id);
    });
  }

  /**
   * Compares every rule with what the kernel reports (fingerprints), re-applies missing or different
   * enabled rules, removes installed ids that no enabled rule owns. `errors` counts rules that are still
   * not enforced afterwards (engine error, or app file still missing).
   */
  reconcile(): Promise<ReconcileResult> {
    return this.exclusive(async () => {
      this.requireEngine();
      try {
        return await this.reconcileNow();
      } catch (error) {
        throw this.engineDownProblem(error);
      }
    });
  }

  /**
   * Replaces every rule of group `groupId` by `drafts` (owned by the group, so read-only through /rules).
   * One DB transaction deletes the old rows, inserts the new ones and runs `hooks.persist` (the group's own
   * rows); then the engine gets the new rules before it loses the old ones, so nothing goes unfiltered in
   * between. ENGINE_DOWN at any point undoes the DB change (`hooks.undo`, in the undo transaction) and is a
   * 503: a failed install changes nothing. Other engine errors are the rules' sync states, as for /rules.
   */
  replaceGroupRules(groupId: string, drafts: readonly RuleDraft[], hooks: GroupWriteHooks<number[]>): Promise<number[]> {
    return this.exclusive(async () => {
      const previous = this.store.listByGroup(groupId);
      if (previous.some((rule) => rule.enabled) || drafts.some((draft) => draft.enabled)) this.requireEngine();
      const now = this.timestamp();
      const inserted = this.store.transaction(() => {
        for (const rule of previous) this.store.delete(rule.id);
        const rows = drafts.map((draft) => this.store.insert(draft, draft.enabled ? 'PENDING' : 'DISABLED', now, groupId));
        hooks.persist(rows.map((row) => row.id), previous);
        return rows;
      });
      try {
        for (const rule of inserted) {
          if (rule.enabled) await this.applyEnabled(rule, true);
        }
        for (const rule of previous) await this.removeFromEngine(rule);
      } catch (error) {
        this.store.transaction(() => {
          for (const rule of inserted) this.store.delete(rule.id);
          for (const rule of previous) this.restoreRule(rule);
          hooks.undo();
        });
        for (const rule of inserted) this.watcher.unwatch(rule.id);
        await this.reinstate(previous, inserted);
        throw this.engineDownProblem(error);
      }
      for (const rule of previous) this.counters.drop(rule.id);
      return inserted.map((rule) => rule.id);
    });
  }

  /** Deletes every rule of group `groupId`, with `hooks` as in `replaceGroupRules`. */
  removeGroupRules(groupId: string, hooks: GroupWriteHooks<void>): Promise<void> {
    return this.exclusive(async () => {
      const previous = this.store.listByGroup(groupId);
      if (previous.some((rule) => rule.enabled)) this.requireEngine();
      this.store.transaction(() => {
        for (const rule of previous) this.store.delete(rule.id);
        hooks.persist(undefined, previous);
      });
      try {
        for (const rule of previous) await this.removeFromEngine(rule);
      } catch (error) {
        this.store.transaction(() => {
          for (const rule of previous) this.restoreRule(rule);
          hooks.undo();
        });
        await this.reinstate(previous, []);
        throw this.engineDownProblem(error);
      }
      for (const rule of previous) this.counters.drop(rule.id);
    });
  }

  /** Start-up: put every enabled rule into the (fresh) engine, and sweep what no rule owns. */
  syncAll(): Promise<void> {
    return this.exclusive(async () => {
      const rules = this.store.list();
      if (!this.engineOpen()) {
        const status = this.engine.status();
        const reason = `engine ${status.state}${status.detail !== null ? `: ${status.detail}` : ''}; the rule will sync when the engine is available`;
        for (const rule of rules) {
          if (rule.enabled) this.store.setSyncState(rule.id, rule.revision, 'PENDING', reason);
          else this.store.setSyncState(rule.id, rule.revision, 'DISABLED', null);
        }
        return;
      }
      // A (re-)opened engine counts from zero: what the old one counted up to its last reading is kept.
      this.counters.foldAll();
      try {
        for (const rule of rules) {
          if (rule.enabled) await this.applyEnabled(rule, true);
          else this.store.setSyncState(rule.id, rule.revision, 'DISABLED', null);
        }
        const owned = new Set(rules.filter((rule) => rule.enabled).map((rule) => rule.id));
        for (const installed of await this.engine.installedRules()) {
          // Internal ids (quota actions) belong to the quota service.
          if (!owned.has(installed.id) && !isInternalRuleId(installed.id)) await this.engine.removeRule(installed.id);
        }
      } catch (error) {
        this.log.error({ err: error }, 'start-up sync of rules failed');
      }
    });
  }

  /** Reads the rule counters and saves them (the periodic flush; a crash loses at most one period). */
  flushCounters(): Promise<void> {
    return this.exclusive(async () => {
      await this.counterReading.next();
      this.counters.flush();
    });
  }

  /** Waits for queued work, saves the counters, then stops the watchers. */
  async close(): Promise<void> {
    this.closed = true;
    await this.queue.idle();
    await this.counterReading.next();
    this.counters.flush();
    this.watcher.close();
  }

  // ---- internals ---------------------------------------------------------------------------------

  private async reconcileNow(): Promise<ReconcileResult> {
    const result: ReconcileResult = { checked: 0, repaired: 0, removed: 0, errors: 0 };
    await this.counterReading.next(); // a repaired rule that the engine had lost starts a new kernel life
    // Internal ids (quota actions) are not the user's rules: not checked, not removed as orphans.
    const installed = new Map((await this.engine.installedRules())
      .filter((entry) => !isInternalRuleId(entry.id))
      .map((entry) => [entry.id, entry.fingerprint]));
    const rules = this.store.list();
    for (const rule of rules) {
      result.checked++;
      const installedFingerprint = installed.get(rule.id);
      if (!rule.enabled) {
        if (installedFingerprint !== undefined) {
          await this.engine.removeRule(rule.id);
          result.removed++;
        }
        if (rule.sync_state !== 'DISABLED') this.store.setSyncState(rule.id, rule.revision, 'DISABLED', null);
        continue;
      }
      if (installedFingerprint === fingerprintOf(toEngineRule(rule, false))) {
        if (rule.sync_state !== 'SYNCED') this.store.setSyncState(rule.id, rule.revision, 'SYNCED', null);
        continue;
      }
      const outcome = await this.applyEnabled(rule, false);
      if (outcome.state === 'SYNCED') result.repaired++;
      else result.errors++;
    }
    const owned = new Set(rules.filter((rule) => rule.enabled).map((rule) => rule.id));
    for (const id of installed.keys()) {
      if (owned.has(id) || rules.some((rule) => rule.id === id)) continue;
      try {
        await this.engine.removeRule(id);
        result.removed++;
      } catch (error) {
        if (isEngineDown(error)) throw error;
        this.log.warn({ err: error, ruleId: id }, 'reconcile could not remove an orphaned rule');
        result.errors++;
      }
    }
    return result;
  }

  /**
   * Applies an enabled rule and records the outcome. Throws only ENGINE_DOWN (the caller undoes its
   * write); every other engine error becomes the rule's state.
   */
  private async applyEnabled(rule: StoredRule, resetCounters: boolean): Promise<SyncOutcome> {
    const outcome = await this.engineApply(rule, resetCounters);
    this.store.setSyncState(rule.id, rule.revision, outcome.state, outcome.error);
    this.afterSync(rule, outcome);
    return outcome;
  }

  /**
   * A create or update: the kernel first (apply, or remove for a disabled rule), then `write` commits the
   * row once, with the outcome. An ENGINE_DOWN has written nothing (503); a row that cannot be written (a
   * slot taken meanwhile, SQLite) undoes the kernel change. A crash in between leaves a kernel entry
   * without a row, which the engine's re-open drops.
   */
  private async applyThenWrite(rule: StoredRule, previous: StoredRule | undefined, write: (outcome: SyncOutcome) => StoredRule): Promise<StoredRule> {
    let outcome: SyncOutcome;
    try {
      outcome = rule.enabled ? await this.engineApply(rule, true) : await this.engineRemove(rule);
    } catch (error) {
      throw this.engineDownProblem(error);
    }
    let stored: StoredRule;
    try {
      stored = write(outcome);
    } catch (error) {
      await this.revertEngine(rule, previous);
      throw error;
    }
    this.afterSync(stored, outcome);
    return stored;
  }

  /** Puts an enabled rule into the kernel; what came of it, without recording it. Throws only ENGINE_DOWN. */
  private async engineApply(rule: StoredRule, resetCounters: boolean): Promise<SyncOutcome> {
    try {
      await this.engine.applyRule(toEngineRule(rule, resetCounters));
      return { state: 'SYNCED', error: null };
    } catch (error) {
      if (isEngineDown(error)) throw error;
      if (error instanceof EngineError && error.code === 'ENOENT') {
        return { state: 'PENDING', error: `app_path does not exist: ${rule.app_path}; the rule will sync when the file appears` };
      }
      const message = error instanceof Error ? error.message : String(error);
      const code = error instanceof EngineError ? `${error.code}: ` : '';
      this.log.warn({ err: error, ruleId: rule.id }, 'engine rejected a rule');
      return { state: 'ERROR', error: `${code}${message}` };
    }
  }

  /** Takes a disabled rule out of the kernel; what came of it, without recording it. Throws only ENGINE_DOWN. */
  private async engineRemove(rule: StoredRule): Promise<SyncOutcome> {
    try {
      await this.engine.removeRule(rule.id);
      return { state: 'DISABLED', error: null };
    } catch (error) {
      if (isEngineDown(error)) throw error;
      return { state: 'ERROR', error: `removal failed: ${(error as Error).message}` };
    }
  }

  /** What follows a recorded outcome: the event of a failed sync, and the file watch. */
  private afterSync(rule: StoredRule, outcome: SyncOutcome): void {
    if (outcome.state === 'ERROR') this.announceSyncError(rule, outcome.error ?? '');
    this.updateWatch({ ...rule, sync_state: outcome.state });
  }

  /**
   * The row of a create or update could not be written after the kernel took `written`: best effort to
   * put back `previous` (undefined: nothing was there). What this misses, reconcile repairs.
   */
  private async revertEngine(written: StoredRule, previous: StoredRule | undefined): Promise<void> {
    if (!this.engineOpen()) return;
    try {
      if (previous?.enabled === true) await this.engine.applyRule(toEngineRule(previous, false));
      else await this.engine.removeRule(written.id);
    } catch (error) {
      this.log.warn({ err: error, ruleId: written.id }, 'could not undo a rule write in the engine; reconcile repairs it');
    }
  }

  /**
   * Takes a deleted rule out of the engine. Throws only ENGINE_DOWN; anything else leaves an orphan in
   * the kernel that reconcile sweeps, which is logged rather than failing a write the database has done.
   */
  private async removeFromEngine(rule: StoredRule): Promise<void> {
    this.watcher.unwatch(rule.id);
    if (!rule.enabled) return;
    try {
      await this.engine.removeRule(rule.id);
    } catch (error) {
      if (isEngineDown(error)) throw error;
      this.log.warn({ err: error, ruleId: rule.id }, 'engine could not remove a deleted group rule; reconcile will sweep it');
    }
  }

  /**
   * After an undone group write: best effort to make the kernel match the restored rows again. If the
   * engine is down this fails quietly; the supervisor's re-apply after recovery syncs every rule anyway.
   */
  private async reinstate(restored: readonly StoredRule[], discarded: readonly StoredRule[]): Promise<void> {
    if (!this.engineOpen()) return;
    await this.counterReading.next();
    try {
      for (const rule of discarded) if (rule.enabled) await this.engine.removeRule(rule.id);
      for (const rule of restored) if (rule.enabled) await this.applyEnabled(rule, false);
    } catch (error) {
      this.log.warn({ err: error }, 'could not restore the engine after an undone group write; it re-syncs when the engine recovers');
    }
  }

  private async removeDisabled(rule: StoredRule): Promise<void> {
    const outcome = await this.engineRemove(rule);
    this.store.setSyncState(rule.id, rule.revision, outcome.state, outcome.error);
    this.afterSync(rule, outcome);
  }

  /** Every failed sync (not a missing app file: that is PENDING, waiting, not an error) is an event. */
  private announceSyncError(rule: StoredRule, error: string): void {
    this.events?.emit('rule_sync_error', { rule_id: String(rule.id), name: rule.name, sync_state: 'ERROR', error });
  }

  /**
   * A PENDING rule waits for its file; a SYNCED EXACT_PATH rule follows its file when it is replaced
   * (the engine identifies the executable by inode, so a renamed-over file needs a re-apply).
   */
  private updateWatch(rule: StoredRule): void {
    const waitsForFile = rule.enabled && rule.app_path !== '' && rule.sync_state === 'PENDING';
    const followsFile = rule.enabled && rule.app_path !== '' && rule.sync_state === 'SYNCED' && rule.match_mode === 'EXACT_PATH';
    if (waitsForFile || followsFile) {
      this.watcher.watch(rule.id, rule.app_path, () => { void this.onAppPathChanged(rule.id); });
    } else {
      this.watcher.unwatch(rule.id);
    }
  }

  private onAppPathChanged(id: number): Promise<void> {
    return this.exclusive(async () => {
      if (this.closed) return;
      const rule = this.store.get(id);
      if (rule === undefined || !rule.enabled) {
        this.watcher.unwatch(id);
        return;
      }
      if (!this.engineOpen() || (rule.sync_state === 'PENDING' && !fs.existsSync(rule.app_path))) {
        this.updateWatch(rule); // a directory on the way appeared, or nothing to do yet: watch deeper
        return;
      }
      try {
        await this.counterReading.next(); // the engine drops a rule whose file vanished, and its counters
        const outcome = await this.applyEnabled(rule, false);
        this.log.info({ ruleId: id, syncState: outcome.state }, 'app path changed; rule re-applied');
      } catch (error) {
        this.log.warn({ err: error, ruleId: id }, 'app path changed but the engine is down');
      }
    }).catch((error: unknown) => this.log.error({ err: error, ruleId: id }, 're-apply after an app path change failed'));
  }

  /**
   * One kernel reading into the counter book; while the engine is down the last reading stands. Only
   * through `counterReading`, so that two readings never overlap.
   */
  private async sampleCounters(): Promise<void> {
    if (!this.engineOpen()) return;
    const token = this.counters.beginReading();
    let readings: readonly RuleCounters[];
    try {
      readings = (await this.engine.readCounters()).rules;
    } catch (error) {
      this.log.warn({ err: error }, 'reading rule counters failed');
      return;
    }
    this.counters.record(token, this.store.list().map((rule) => rule.id), readings);
  }

  /** Undo of a write: the row as it was, and its saved counters (the write's transaction dropped them). */
  private restoreRule(rule: StoredRule): void {
    this.store.restore(rule);
    this.counters.resave(rule.id);
  }

  private presentFresh(id: number): Rule {
    // No kernel read: a rule that was just changed counts from zero, and a retried one keeps its figures.
    return present(this.store.get(id)!, this.counters.total(id));
  }

  private engineOpen(): boolean {
    return this.engine.status().state === 'OPEN';
  }

  private requireEngine(): void {
    if (this.engineOpen()) return;
    throw this.engineDownProblem(undefined);
  }

  private engineDownProblem(error: unknown): Error {
    if (error !== undefined && !isEngineDown(error)) return error as Error;
    const status = this.engineStatus();
    const why = status.detail !== null ? ` (${status.detail})` : '';
    return new ProblemError(503, `the filtering engine is ${status.state === 'OPEN' ? 'DOWN' : status.state}${why}; nothing was changed, retry later`, {
      headers: { 'Retry-After': String(ENGINE_RETRY_AFTER_SECONDS) },
    });
  }

  private refuseGroupRule(rule: StoredRule): void {
    if (rule.group_id !== null) {
      throw new ProblemError(409, `rule ${rule.id} belongs to group ${rule.group_id}; change it through the group`);
    }
  }

  private timestamp(): string {
    return this.now().toISOString();
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    return this.queue.run(work);
  }
}

function present(rule: StoredRule, counters: CounterValues): Rule {
  return {
    id: String(rule.id),
    name: rule.name,
    app_path: rule.app_path,
    action: rule.action,
    direction: rule.direction,
    remote_address: rule.remote_address,
    remote_port: rule.remote_port,
    protocol: rule.protocol,
    rate_limit_down_bytes_per_sec: rule.rate_limit_down_bytes_per_sec,
    rate_limit_up_bytes_per_sec: rule.rate_limit_up_bytes_per_sec,
    limit_scope: rule.limit_scope,
    match_mode: rule.match_mode,
    priority: rule.priority,
    enabled: rule.enabled,
    revision: rule.revision,
    sync_state: rule.sync_state,
    sync_error: rule.sync_error,
    group_id: rule.group_id,
    created_at: rule.created_at,
    updated_at: rule.updated_at,
    bytes_up: counters.bytes_up,
    bytes_down: counters.bytes_down,
    blocked_count: counters.blocked_count,
  };
}
