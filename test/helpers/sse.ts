/**
 * Real-HTTP helpers for tests that cannot use inject: an SSE client that parses the stream as it arrives,
 * and a one-shot request on a fresh connection (no keep-alive pool that could hide a closed listener).
 */
import http from 'node:http';

export interface SseMessage {
  id: number | undefined;
  event: string | undefined;
  data: unknown;
}

export interface SseClient {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** Events received so far, in order. */
  readonly events: SseMessage[];
  /** Comment lines received so far (without the leading colon and space). */
  readonly comments: string[];
  /** Raw text received so far. */
  text(): string;
  ended(): boolean;
  /** Resolves once `predicate` holds for what was received; rejects after `timeoutMs`. */
  waitFor(predicate: (client: SseClient) => boolean, timeoutMs?: number, what?: string): Promise<void>;
  close(): void;
}

export function openSse(url: string, headers: Record<string, string>): Promise<SseClient> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { headers, agent: false }, (response) => {
      let raw = '';
      let pending = '';
      let done = false;
      const events: SseMessage[] = [];
      const comments: string[] = [];
      const waiters = new Set<() => void>();
      const notify = (): void => { for (const waiter of [...waiters]) waiter(); };
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        raw += chunk;
        pending += chunk;
        let boundary: number;
        while ((boundary = pending.indexOf('\n\n')) !== -1) {
          const block = pending.slice(0, boundary);
          pending = pending.slice(boundary + 2);
          const message: SseMessage = { id: undefined, event: undefined, data: undefined };
          let isEvent = false;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) comments.push(line.slice(1).trim());
            else if (line.startsWith('id: ')) { message.id = Number(line.slice(4)); isEvent = true; }
            else if (line.startsWith('event: ')) { message.event = line.slice(7); isEvent = true; }
            else if (line.startsWith('data: ')) { message.data = JSON.parse(line.slice(6)); isEvent = true; }
          }
          if (isEvent) events.push(message);
        }
        notify();
      });
      const finish = (): void => { done = true; notify(); };
      response.on('end', finish);
      response.on('close', finish);
      response.on('error', finish);
      const client: SseClient = {
        status: response.statusCode ?? 0,
        headers: response.headers,
        events,
        comments,
        text: () => raw,
        ended: () => done,
        waitFor(predicate, timeoutMs = 5000, what = 'condition') {
          return new Promise((resolveWait, rejectWait) => {
            const check = (): void => {
              if (!predicate(client)) return;
              clearTimeout(timer);
              clearInterval(poll);
              waiters.delete(check);
              resolveWait();
            };
            // Re-checked on every chunk, and polled for conditions outside the stream (server state).
            const poll = setInterval(check, 20);
            const timer = setTimeout(() => {
              clearInterval(poll);
              waiters.delete(check);
              rejectWait(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received: ${raw.slice(-500)}`));
            }, timeoutMs);
            waiters.add(check);
            check();
          });
        },
        close() {
          request.destroy();
          response.destroy();
        },
      };
      resolve(client);
    });
    request.on('error', reject);
  });
}

export interface PlainResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json<T = unknown>(): T;
}

/** One request on its own connection (`agent: false`), so a listener that is gone cannot answer. */
export function plainRequest(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: unknown } = {},
): Promise<PlainResponse> {
  return new Promise((resolve, reject) => {
    const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
    const headers: Record<string, string> = { ...options.headers };
    if (payload !== undefined) headers['content-type'] = 'application/json';
    const request = http.request(url, { method: options.method ?? 'GET', headers, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => { body += chunk; });
      response.on('end', () => resolve({
        status: response.statusCode ?? 0,
        headers: response.headers,
        body,
        json: <T>() => JSON.parse(body) as T,
      }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(payload);
  });
}
