/**
 * Rule counters that survive restarts and engine re-opens (contract: `bytes_up`, `bytes_down`,
 * `blocked_count` since the rule was last changed).
 *
 * The kernel's counters of a rule restart from zero whenever the engine re-opens, the service starts, or
 * the engine drops the rule (its file vanished, it was lost). Each such restart ends one "kernel life" of
 * the rule. Per rule the book keeps `base` (what earlier lives counted) and `last` (the newest kernel
 * reading of the current life); the rule shows `base + last`. A life's last reading is folded into the
 * base when the life ends: explicitly before a re-apply to a re-opened engine (`foldAll`), or when a
 * reading shows the rule gone or its counters lower than before.
 *
 * Persistence: `base + last` is saved per rule at every flush and at shutdown; at the next start every
 * kernel counter starts from zero, so the saved value is the new base. A crash loses at most what was
 * counted since the last flush. A change of the rule zeroes it; deleting the rule drops it.
 *
 * Readings are asynchronous and may straddle a fold, a change or a delete; `beginReading` returns a token
 * and a reading that straddled one of those is discarded, so nothing is counted twice.
 */
import { isInternalRuleId, type RuleCounters } from '../engine/engine.js';
import type { CounterValues, RulesStore } from '../store/rules-store.js';

interface Entry {
  base: CounterValues;
  last: CounterValues;
  /** What the database holds for the rule (so a flush writes only what changed). */
  saved: CounterValues;
}

const ZERO: CounterValues = Object.freeze({ bytes_up: 0, bytes_down: 0, blocked_count: 0 });

function sum(a: CounterValues, b: CounterValues): CounterValues {
  return { bytes_up: a.bytes_up + b.bytes_up, bytes_down: a.bytes_down + b.bytes_down, blocked_count: a.blocked_count + b.blocked_count };
}

function same(a: CounterValues, b: CounterValues): boolean {
  return a.bytes_up === b.bytes_up && a.bytes_down === b.bytes_down && a.blocked_count === b.blocked_count;
}

function isZero(values: CounterValues): boolean {
  return same(values, ZERO);
}

function fromEngine(reading: RuleCounters): CounterValues {
  return { bytes_up: reading.bytesUp, bytes_down: reading.bytesDown, blocked_count: reading.blocked };
}

export class RuleCounterBook {
  private readonly entries = new Map<number, Entry>();
  private epoch = 0;

  constructor(private readonly store: RulesStore) {
    for (const [id, saved] of store.counters()) this.entries.set(id, { base: saved, last: ZERO, saved });
  }

  /** What rule `id` has counted since it was last changed, as far as the book knows. */
  total(id: number): CounterValues {
    const entry = this.entries.get(id);
    return entry === undefined ? ZERO : sum(entry.base, entry.last);
  }

  /** Call before asking the engine for counters; hand the token to `record` with the answer. */
  beginReading(): number {
    return this.epoch;
  }

  /**
   * Takes a kernel reading (`readings`: every rule the engine holds) for the rules in `ruleIds`. Ignored
   * when a fold, change or delete happened since `beginReading` returned `token`.
   */
  record(token: number, ruleIds: Iterable<number>, readings: readonly RuleCounters[]): void {
    if (token !== this.epoch) return;
    const byId = new Map(readings.filter((reading) => !isInternalRuleId(reading.id)).map((reading) => [reading.id, fromEngine(reading)]));
    for (const id of ruleIds) {
      const reading = byId.get(id);
      const entry = this.entries.get(id);
      if (entry === undefined) {
        if (reading !== undefined && !isZero(reading)) this.entries.set(id, { base: ZERO, last: reading, saved: ZERO });
        continue;
      }
      // Gone from the engine, or lower than before: the life that counted `last` has ended.
      const restarted = reading === undefined
        || reading.bytes_up < entry.last.bytes_up
        || reading.bytes_down < entry.last.bytes_down
        || reading.blocked_count < entry.last.blocked_count;
      if (restarted) entry.base = sum(entry.base, entry.last);
      entry.last = reading ?? ZERO;
    }
  }

  /** Every kernel counter restarts (the engine re-opened): the last readings become part of the bases. */
  foldAll(): void {
    this.epoch++;
    for (const entry of this.entries.values()) {
      entry.base = sum(entry.base, entry.last);
      entry.last = ZERO;
    }
  }

  /** The rule changed (its kernel counters were reset; the store dropped its saved row). */
  zero(id: number): void {
    this.epoch++;
    this.entries.delete(id);
  }

  /** The rule was deleted (the store dropped its saved row). */
  drop(id: number): void {
    this.zero(id);
  }

  /** Writes one rule's figures again (after an undone write removed its saved row). */
  resave(id: number): void {
    const entry = this.entries.get(id);
    if (entry === undefined) return;
    entry.saved = this.total(id);
    this.store.saveCounters([{ id, values: entry.saved }]);
  }

  /** Saves every rule whose figures changed since they were last saved, in one transaction. */
  flush(): void {
    const changed: Array<{ id: number; values: CounterValues }> = [];
    for (const [id, entry] of this.entries) {
      const values = this.total(id);
      if (!same(values, entry.saved)) changed.push({ id, values });
    }
    if (changed.length === 0) return;
    this.store.saveCounters(changed);
    for (const { id, values } of changed) this.entries.get(id)!.saved = values;
  }
}
