/**
 * One asynchronous reading (the kernel's counters, the socket table) shared by everyone who needs it:
 * - readings never overlap: one that started earlier but finished later would be recorded last and make
 *   the figures go backwards;
 * - `fresh()` reuses a reading that started at most `maxAgeMs` before the call (finished or still running),
 *   so a burst of concurrent GETs costs one kernel read, and a poller at most one per `maxAgeMs`;
 * - `next()` waits for a reading that starts after the call (writes that must see the kernel as it is now).
 * `maxAgeMs <= 0` reuses nothing: every `fresh()` is a `next()`.
 * A reading that fails reaches its callers and counts for nothing: the next call, `fresh()` too, reads again.
 */
export class SharedReading {
  private inflight: Promise<void> | null = null;
  private inflightStartedAt = 0;
  /** Start time of the last reading that finished; -Infinity before the first. */
  private finishedStartedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly read: () => Promise<void>,
    private readonly maxAgeMs: number,
    /** Milliseconds, any origin; tests drive a fake clock. */
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Resolves once a reading that started at most `maxAgeMs` ago has finished. */
  fresh(): Promise<void> {
    if (this.maxAgeMs <= 0) return this.next();
    const asked = this.now();
    if (this.inflight !== null) return asked - this.inflightStartedAt <= this.maxAgeMs ? this.inflight : this.next();
    if (asked - this.finishedStartedAt <= this.maxAgeMs) return Promise.resolve();
    return this.start();
  }

  /** Resolves once a reading that started after this call has finished. */
  async next(): Promise<void> {
    const running = this.inflight;
    if (running !== null) {
      await running.catch(() => {});
      // Someone else who waited for the same reading may have started the next one already: share it.
      if (this.inflight !== null) return this.inflight;
    }
    return this.start();
  }

  private start(): Promise<void> {
    const startedAt = this.now();
    const reading = (async () => this.read())().then(
      () => {
        this.inflight = null;
        this.finishedStartedAt = startedAt;
      },
      (error: unknown) => {
        this.inflight = null; // a failed reading is no reading: the next fresh() reads again
        throw error;
      },
    );
    this.inflight = reading;
    this.inflightStartedAt = startedAt;
    return reading;
  }
}
