/**
 * Per-second traffic totals for GET /throughput: a ring of the last `capacity` seconds, keyed by epoch
 * second, fed once a second with the engine's cumulative totals (the ring stores the differences).
 *
 * Seconds the sampler never saw (idle service, before start, engine down) read as zeros, so a window is
 * always exactly N samples.
 */
export interface ThroughputSample {
  ts: string;
  up_bytes: number;
  down_bytes: number;
}

export const THROUGHPUT_CAPACITY = 3600;

export class ThroughputRing {
  private readonly seconds: Float64Array;
  private readonly up: Float64Array;
  private readonly down: Float64Array;
  private previous: { up: number; down: number } | null = null;

  constructor(private readonly capacity: number = THROUGHPUT_CAPACITY) {
    // -1 marks a slot no second has been written to yet.
    this.seconds = new Float64Array(capacity).fill(-1);
    this.up = new Float64Array(capacity);
    this.down = new Float64Array(capacity);
  }

  /**
   * Records cumulative totals read at `atMs`; the growth since the last reading goes to that second.
   * Totals that went backwards mean the engine was re-opened (counters restart at zero): the new totals
   * are all traffic since then.
   */
  record(totalUp: number, totalDown: number, atMs: number): void {
    const previous = this.previous;
    this.previous = { up: totalUp, down: totalDown };
    if (previous === null) return; // the first reading is the baseline: what came before is not ours
    const deltaUp = totalUp >= previous.up ? totalUp - previous.up : totalUp;
    const deltaDown = totalDown >= previous.down ? totalDown - previous.down : totalDown;
    const second = Math.floor(atMs / 1000);
    const slot = second % this.capacity;
    if (this.seconds[slot] !== second) {
      this.seconds[slot] = second;
      this.up[slot] = 0;
      this.down[slot] = 0;
    }
    this.up[slot] += deltaUp;
    this.down[slot] += deltaDown;
  }

  /** Forgets the baseline (the engine went away): the next reading starts a new one. */
  resetBaseline(): void {
    this.previous = null;
  }

  /** The `count` seconds ending with the second of `nowMs`, oldest first. */
  window(count: number, nowMs: number): ThroughputSample[] {
    const last = Math.floor(nowMs / 1000);
    const samples: ThroughputSample[] = [];
    for (let second = last - count + 1; second <= last; second++) {
      const slot = ((second % this.capacity) + this.capacity) % this.capacity;
      const known = this.seconds[slot] === second;
      samples.push({
        ts: new Date(second * 1000).toISOString(),
        up_bytes: known ? this.up[slot]! : 0,
        down_bytes: known ? this.down[slot]! : 0,
      });
    }
    return samples;
  }
}
