/**
 * `total_blocked` across restarts: a baseline persisted in the meta table plus the engine's counter since
 * it opened. If the engine counter goes backwards (the engine re-opened), what it had counted is folded
 * into the baseline. Flushed every few seconds and on shutdown, so a crash loses only seconds of counting.
 */
import type { Engine } from '../engine/engine.js';
import type { MetaStore } from '../store/meta-store.js';
import { SharedReading } from './shared-reading.js';

const META_KEY = 'total_blocked';

export interface BlockedTotalOptions {
  /** How old a reading `recent()` may answer with (it dumps every rule's counters); 0 = always read. */
  maxAgeMs?: number;
  /** Milliseconds, for the age of readings; tests drive a fake clock. */
  clockMs?: () => number;
}

export class BlockedTotal {
  private baseline: number;
  private lastEngineBlocked = 0;
  /** What the meta table holds, so that a flush of an unchanged total commits (and fsyncs) nothing. */
  private saved: number;
  private readonly reading: SharedReading;

  constructor(private readonly engine: Engine, private readonly meta: MetaStore, options: BlockedTotalOptions = {}) {
    this.baseline = meta.getNumber(META_KEY, 0);
    this.saved = this.baseline;
    this.reading = new SharedReading(() => this.read(), options.maxAgeMs ?? 0, options.clockMs);
  }

  /** Reads the engine (when it is open) now and returns the running total. */
  async sample(): Promise<number> {
    await this.reading.next();
    return this.total();
  }

  /** The running total from a reading at most `maxAgeMs` old (/status, which may be polled hard). */
  async recent(): Promise<number> {
    await this.reading.fresh();
    return this.total();
  }

  total(): number {
    return this.baseline + this.lastEngineBlocked;
  }

  flush(): void {
    const total = this.total();
    if (total === this.saved) return;
    this.meta.setNumber(META_KEY, total);
    this.saved = total;
  }

  private async read(): Promise<void> {
    if (this.engine.status().state !== 'OPEN') return;
    try {
      const counters = await this.engine.readCounters();
      if (counters.blocked < this.lastEngineBlocked) this.baseline += this.lastEngineBlocked;
      this.lastEngineBlocked = counters.blocked;
    } catch {
      // Engine went away between status() and the read: keep the last known value.
    }
  }
}
