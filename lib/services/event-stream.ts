/**
 * Server-Sent Events clients of GET /events: framing, heartbeats, replay, and the slow-client policy.
 *
 * A client never slows the service down: writes go to the client's socket without waiting, and what the
 * socket cannot take yet stays in that client's own write queue. That queue is bounded: when the bytes
 * waiting for one client exceed `maxBacklogBytes`, the client is dropped (its connection destroyed) and can
 * reconnect with Last-Event-ID. Clients are removed when they disconnect and when the service closes.
 */
import type { ServerResponse } from 'node:http';
import type { BusEvent, EventBus } from './event-bus.js';
import { DEFAULT_HEARTBEAT_SEC } from '../schemas/config.js';

/** Per client; far above what a reading client ever has queued (events are a few hundred bytes). */
export const DEFAULT_MAX_BACKLOG_BYTES = 1024 * 1024;

export function formatEvent(event: BusEvent): string {
  // JSON.stringify never emits a raw newline, so `data:` is always a single line.
  return `id: ${event.id}\nevent: ${event.name}\ndata: ${JSON.stringify(event.data)}\n\n`;
}

interface Client {
  response: ServerResponse;
  unsubscribe: () => void;
}

export interface EventStreamOptions {
  bus: EventBus;
  heartbeatSec?: number;
  maxBacklogBytes?: number;
  onDrop?: (reason: string) => void;
}

export class EventStreamHub {
  private readonly bus: EventBus;
  private readonly clients = new Set<Client>();
  private readonly maxBacklogBytes: number;
  private readonly onDrop: (reason: string) => void;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: EventStreamOptions) {
    this.bus = options.bus;
    this.maxBacklogBytes = options.maxBacklogBytes ?? DEFAULT_MAX_BACKLOG_BYTES;
    this.onDrop = options.onDrop ?? (() => {});
    this.setHeartbeat(options.heartbeatSec ?? DEFAULT_HEARTBEAT_SEC);
  }

  get clientCount(): number {
    return this.clients.size;
  }

  /** One timer for all clients; a config reload restarts it with the new period. */
  setHeartbeat(seconds: number): void {
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => {
      for (const client of [...this.clients]) this.write(client, ': hb\n\n');
    }, seconds * 1000);
    this.heartbeatTimer.unref();
  }

  /**
   * Takes over a response: writes the headers, the replay (events after `lastEventId`, when given), then
   * streams live events. Replay and subscription happen in the same tick, so no event falls between them.
   */
  attach(response: ServerResponse, lastEventId: number | undefined): void {
    if (this.closed) {
      response.writeHead(503, { 'content-type': 'text/plain' }).end();
      return;
    }
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    response.socket?.setNoDelay(true);
    const client: Client = { response, unsubscribe: () => {} };
    this.clients.add(client);
    response.on('close', () => this.remove(client));

    // An opening comment flushes the headers at once, so the client knows it is connected.
    let opening = ': connected\n\n';
    if (lastEventId !== undefined) {
      const replay = this.bus.since(lastEventId);
      if (replay.incomplete) {
        const oldest = replay.events[0]?.id;
        opening += `: replay-incomplete events after id ${lastEventId} are no longer buffered; ` +
          (oldest !== undefined ? `replaying from id ${oldest}\n\n` : 'nothing is buffered\n\n');
      }
      opening += replay.events.map(formatEvent).join('');
    }
    if (!this.write(client, opening)) return;
    client.unsubscribe = this.bus.subscribe((event) => { this.write(client, formatEvent(event)); });
  }

  /**
   * Ends every open stream; clients may reconnect. Token rotation uses it: every open stream was
   * authorised with the token that was just revoked.
   */
  endAll(): void {
    for (const client of [...this.clients]) {
      this.remove(client);
      client.response.end();
    }
  }

  /** Service shutdown: ends every stream, so the HTTP server can close, and accepts no new ones. */
  closeAll(): void {
    this.closed = true;
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    this.endAll();
  }

  /** False when the client was dropped. */
  private write(client: Client, text: string): boolean {
    const { response } = client;
    if (response.destroyed || response.writableEnded) {
      this.remove(client);
      return false;
    }
    response.write(text);
    if (response.writableLength > this.maxBacklogBytes) {
      this.onDrop(`SSE client fell ${response.writableLength} bytes behind (limit ${this.maxBacklogBytes}); dropped`);
      this.remove(client);
      response.destroy();
      return false;
    }
    return true;
  }

  private remove(client: Client): void {
    if (!this.clients.delete(client)) return;
    client.unsubscribe();
  }
}
