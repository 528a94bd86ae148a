/**
 * A loopback HTTP server in the test process (node is never the app under a rule): `/small` answers a
 * few bytes, `/stream` sends data until the client goes away, so a download can be running when a rule
 * changes.
 */
import { createServer, type Server } from 'node:http';
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';

export interface HttpFixture {
  url(path: string): string;
  close(): Promise<void>;
}

export async function startHttpFixture(): Promise<HttpFixture> {
  const chunk = Buffer.alloc(64 * 1024, 0x6e);
  const server: Server = createServer((request, response) => {
    if (request.url === '/small') {
      response.end('netclamp e2e\n');
      return;
    }
    if (request.url === '/stream') {
      response.writeHead(200, { 'content-type': 'application/octet-stream' });
      const pump = (): void => {
        while (!response.destroyed && response.write(chunk)) {
          // keep the socket buffer full; 'drain' resumes
        }
      };
      response.on('drain', pump);
      response.on('error', () => undefined);
      pump();
      return;
    }
    response.statusCode = 404;
    response.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface ProcessOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  elapsedMs: number;
  stderr: string;
}

/** Runs a command to completion, timing it; kills it after `timeoutMs` (the outcome then says SIGKILL). */
export function timedRun(command: string, args: readonly string[], timeoutMs: number): Promise<ProcessOutcome> {
  const started = performance.now();
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (data: Buffer) => {
    stderr += data.toString('utf8');
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, elapsedMs: performance.now() - started, stderr });
    });
  });
}
