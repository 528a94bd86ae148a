/**
 * Watches the engine and brings it back when the data plane goes away under the service (programs
 * detached by someone else, a BPF failure, a WFP session lost): within a check period it reports
 * `engine_down`, then closes and re-opens the engine with backoff, re-applies every enabled rule, counts
 * the restart and reports `engine_recovered`.
 *
 * Writes need no help from here: the rule service refuses them (503 + Retry-After) whenever the engine's
 * own status is not OPEN, and the engine's status() is what notices the loss.
 *
 * `status()` is the engine's status as the service reports it (/status): RECOVERING while an attempt
 * re-attaches and re-applies the rules, DOWN between attempts, and in both the detail says what was lost
 * (and how the last attempt failed), not what the recovery itself did to the engine ("engine closed").
 */
import type { Engine, EngineStatus } from '../engine/engine.js';
import type { EventBus } from './event-bus.js';

export interface EngineSupervisorOptions {
  engine: Engine;
  events: EventBus;
  /** Re-applies every enabled rule to a freshly opened engine; returns how many rules it applied. */
  reapplyRules: () => Promise<number>;
  checkIntervalMs?: number;
  /** Re-open delays, in order; the last repeats. */
  backoffMs?: readonly number[];
  onError?: (error: unknown, attempt: number) => void;
}

export const DEFAULT_CHECK_INTERVAL_MS = 200;
export const DEFAULT_BACKOFF_MS: readonly number[] = [100, 250, 500, 1000, 2000];

export class EngineSupervisor {
  private readonly engine: Engine;
  private readonly events: EventBus;
  private readonly reapplyRules: () => Promise<number>;
  private readonly backoffMs: readonly number[];
  private readonly onError: (error: unknown, attempt: number) => void;
  private readonly timer: NodeJS.Timeout;
  private wasOpen: boolean;
  private recovering: Promise<void> | null = null;
  private stopped = false;
  private ownRestarts = 0;
  /** The engine's detail when the loss was seen; kept while the recovery closes and re-opens it. */
  private lossDetail: string | null = null;
  private attempting = false;
  private lastAttemptError: string | null = null;
  /** Ends the backoff wait at once (stop()). */
  private wakeUp: (() => void) | null = null;

  constructor(options: EngineSupervisorOptions) {
    this.engine = options.engine;
    this.events = options.events;
    this.reapplyRules = options.reapplyRules;
    this.backoffMs = options.backoffMs ?? DEFAULT_BACKOFF_MS;
    this.onError = options.onError ?? (() => {});
    this.wasOpen = this.engine.status().state === 'OPEN';
    this.timer = setInterval(() => this.check(), options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS);
    this.timer.unref();
  }

  /** Re-opens survived: the engine's own count when it keeps one (Windows reopens BFE sessions itself). */
  get restarts(): number {
    return Math.max(this.ownRestarts, this.engine.status().restarts ?? 0);
  }

  get isRecovering(): boolean {
    return this.recovering !== null;
  }

  /** The engine's status with the recovery overlaid (see the file comment). */
  status(): EngineStatus {
    const status = this.engine.status();
    if (this.recovering === null) return status;
    const lost = `lost: ${this.lossDetail ?? 'the data plane went away'}`;
    if (this.attempting) return { ...status, state: 'RECOVERING', detail: `re-attaching and re-applying every rule (${lost})` };
    const failed = this.lastAttemptError === null ? '' : `; the last re-attach failed: ${this.lastAttemptError}`;
    return { ...status, state: 'DOWN', detail: `${lost}${failed}; retrying` };
  }

  /** One look at the engine; the timer calls it, tests may too. */
  check(): void {
    if (this.stopped || this.recovering !== null) return;
    const status = this.engine.status();
    if (status.state === 'OPEN') {
      this.wasOpen = true;
      return;
    }
    // An engine that never opened (no root, no addon) is not a loss; only OPEN -> DOWN is.
    if (!this.wasOpen || status.state === 'UNAVAILABLE') return;
    this.wasOpen = false;
    this.lossDetail = status.detail;
    this.lastAttemptError = null;
    this.events.emit('engine_down', { state: status.state, detail: status.detail });
    this.recovering = this.recover().finally(() => {
      this.recovering = null;
    });
  }

  /** Resolves when a recovery in progress has ended (tests). */
  async settled(): Promise<void> {
    await this.recovering;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.wakeUp?.(); // a shutdown does not sit out a backoff
    await this.recovering?.catch(() => {});
  }

  private async recover(): Promise<void> {
    for (let attempt = 0; !this.stopped; attempt++) {
      await this.backoff(this.backoffMs[Math.min(attempt, this.backoffMs.length - 1)] ?? 1000);
      if (this.stopped) return;
      this.attempting = true;
      try {
        await this.engine.close();
        await this.engine.open();
        const reapplied = await this.reapplyRules();
        if (this.engine.status().state !== 'OPEN') throw new Error('the engine went down again while rules were re-applied');
        this.ownRestarts++;
        this.wasOpen = true;
        this.events.emit('engine_recovered', { state: 'OPEN', restarts: this.restarts, rules_reapplied: reapplied });
        return;
      } catch (error) {
        this.lastAttemptError = error instanceof Error ? error.message : String(error);
        this.onError(error, attempt);
      } finally {
        this.attempting = false;
      }
    }
  }

  private backoff(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeUp = done;
    }).finally(() => {
      this.wakeUp = null;
    });
  }
}
