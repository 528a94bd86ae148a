/**
 * The service's event bus: every event the contract lists, typed by name, numbered with a monotonic id and
 * kept in a bounded ring so that a reconnecting SSE client can be replayed what it missed.
 *
 * Ids: the first id of a run is the start time in milliseconds, then +1 per event. So ids also increase
 * across restarts (a client's Last-Event-ID from an earlier run is recognisably older than anything we
 * hold, and is answered with "replay incomplete"), while staying plain integers.
 */
import type { FieldError } from '../schemas/problem.js';
import { DEFAULT_REPLAY_BUFFER } from '../schemas/config.js';

/** Payload of each event, by name. Every name of the contract is here, emitted or not yet. */
export interface EventPayloads {
  quota_exceeded: { quota_id: string; name: string; used_bytes: number; limit_bytes: number; on_exceed: string; period_end: string | null };
  quota_reset: { quota_id: string; name: string; reason: 'period' | 'api' };
  rule_sync_error: { rule_id: string; name: string; sync_state: string; error: string };
  engine_down: { state: string; detail: string | null };
  engine_recovered: { state: string; restarts: number; rules_reapplied: number };
  config_reloaded: { source: 'api' | 'file'; changed: string[] };
  config_error: { source: 'file'; detail: string; errors: FieldError[] };
  /** `reason` and `credit_id` say which credit changed (absent on emitters that only report figures). */
  license_changed: { used: number; cap: number; reason?: 'activated' | 'transferred'; credit_id?: string };
  group_updated: { group_id: string; name: string; version: string };
  group_error: { group_id: string; detail: string };
}

export type EventName = keyof EventPayloads;

export const EVENT_NAMES: readonly EventName[] = [
  'quota_exceeded', 'quota_reset', 'rule_sync_error', 'engine_down', 'engine_recovered',
  'config_reloaded', 'config_error', 'license_changed', 'group_updated', 'group_error',
];

export interface BusEvent<N extends EventName = EventName> {
  id: number;
  name: N;
  data: EventPayloads[N];
  /** ISO 8601 UTC; also inside nothing else, so the payloads stay what the emitter said. */
  at: string;
}

export type EventListener = (event: BusEvent) => void;

export interface Replay {
  events: BusEvent[];
  /** True when events after the requested id may be missing (older than the ring, or from another run). */
  incomplete: boolean;
}

export class EventBus {
  private ring: BusEvent[] = [];
  private capacity: number;
  private nextId: number;
  /** The lowest id that could still be in the ring: everything below it was never ours or was evicted. */
  private firstRetainable: number;
  private readonly listeners = new Set<EventListener>();
  private readonly onListenerError: (error: unknown) => void;

  constructor(options: { capacity?: number; firstId?: number; onListenerError?: (error: unknown) => void } = {}) {
    this.capacity = options.capacity ?? DEFAULT_REPLAY_BUFFER;
    this.nextId = options.firstId ?? Date.now();
    this.firstRetainable = this.nextId;
    this.onListenerError = options.onListenerError ?? (() => {});
  }

  emit<N extends EventName>(name: N, data: EventPayloads[N]): BusEvent<N> {
    const event: BusEvent<N> = { id: this.nextId++, name, data, at: new Date().toISOString() };
    this.ring.push(event);
    this.trim();
    for (const listener of [...this.listeners]) {
      // One broken subscriber must not keep the event from the others, nor fail the emitter.
      try { listener(event); } catch (error) { this.onListenerError(error); }
    }
    return event;
  }

  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => { this.listeners.delete(listener); };
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }

  /** The id the next event will get. */
  get upcomingId(): number {
    return this.nextId;
  }

  /**
   * Events after `lastId`. An id we cannot vouch for (evicted, from an earlier run, or in the future)
   * yields everything buffered and `incomplete: true`.
   */
  since(lastId: number): Replay {
    if (lastId >= this.firstRetainable - 1 && lastId < this.nextId) {
      return { events: this.ring.filter((event) => event.id > lastId), incomplete: false };
    }
    return { events: [...this.ring], incomplete: true };
  }

  /** Config reload: a smaller ring drops the oldest events at once. */
  resize(capacity: number): void {
    this.capacity = capacity;
    this.trim();
  }

  private trim(): void {
    if (this.ring.length <= this.capacity) return;
    this.ring.splice(0, this.ring.length - this.capacity);
    this.firstRetainable = this.ring[0]?.id ?? this.nextId;
  }
}
