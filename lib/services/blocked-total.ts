/**
 * `total_blocked` across restarts: a baseline persisted in the meta table plus the engine's counter since
 * it opened. If the engine counter goes backwards (the engine re-opened), what it had counted is folded
 * into the baseline. Flushed every few seconds and on shutdown, so a crash loses only seconds of counting.
 */
import type { Engine } from '../engine/engine.js';
import type { MetaStore } from '../store/meta-store.js';

const META_KEY = 'total_blocked';

export class BlockedTotal {
  private baseline: number;
  private lastEngineBlocked = 0;

  constructor(private readonly engine: Engine, private readonly meta: MetaStore) {
    this.baseline = meta.getNumber(META_KEY, 0);
  }

  /** Reads the engine (when it is open) and returns the running total. */
  async sample(): Promise<number> {
    if (this.engine.status().state === 'OPEN') {
      try {
        const counters = await this.engine.readCounters();
        if (counters.blocked < this.lastEngineBlocked) this.baseline += this.lastEngineBlocked;
        this.lastEngineBlocked = counters.blocked;
      } catch {
        // Engine went away between status() and the read: keep the last known value.
      }
    }
    return this.total();
  }

  total(): number {
    return this.baseline + this.lastEngineBlocked;
  }

  flush(): void {
    this.meta.setNumber(META_KEY, this.total());
  }
}
