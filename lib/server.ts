/**
 * Wires the real engine, the config and the app into a listening server. The native engine is imported
 * dynamically so that nothing but the running service ever loads the addon.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Engine } from './engine/engine.js';
import { UnavailableEngine } from './engine/unavailable.js';
import { buildApp } from './app.js';
import { ensureDataDir } from './services/data-dir.js';
import { ConfigError, loadConfig, parseListen, type ListenAddress } from './services/config.js';
import { licenseSettingsFromEnv } from './license/settings.js';

export interface ServeOptions {
  dataDir: string;
  /** HOST:PORT from the command line; overrides config.toml. */
  listen?: string | undefined;
  /** For tests of the wiring; the default loads the native engine. */
  engineFactory?: () => Promise<Engine>;
}

/** After a listen-address change, requests in flight on the old address get this long to finish. */
export const LISTENER_RETIRE_GRACE_MS = 5_000;

export interface RunningServer {
  app: FastifyInstance;
  engine: Engine;
  /** The current address; it changes when [server] listen does. */
  readonly url: string;
  dataDir: string;
  /** Closes the server, then the engine (detaching everything it attached). */
  close(): Promise<void>;
}

interface NativeEngineModule {
  NativeEngine: new () => Engine;
}

/** Opens the native engine; when it cannot (no addon, no privileges), an UnavailableEngine says why. */
export async function openNativeEngine(): Promise<{ engine: Engine; problem: string | null }> {
  let native: Engine;
  try {
    const specifier = './engine/native.js'; // a variable: tsc must not require the file at build time
    const module = (await import(specifier)) as NativeEngineModule;
    native = new module.NativeEngine();
  } catch (error) {
    const reason = `native engine not loadable: ${(error as Error).message}`;
    return { engine: new UnavailableEngine(reason), problem: reason };
  }
  try {
    await native.open();
    return { engine: native, problem: null };
  } catch (error) {
    await native.close().catch(() => {});
    const reason = `native engine failed to open: ${(error as Error).message}`;
    return { engine: new UnavailableEngine(reason), problem: reason };
  }
}

export async function serve(options: ServeOptions): Promise<RunningServer> {
  ensureDataDir(options.dataDir);
  const config = loadConfig(options.dataDir);
  const listen = parseListen(options.listen ?? config.server.listen);

  let engine: Engine;
  let engineProblem: string | null = null;
  if (options.engineFactory !== undefined) {
    engine = await options.engineFactory();
  } else {
    ({ engine, problem: engineProblem } = await openNativeEngine());
  }

  let app: FastifyInstance;
  try {
    // NETCLAMP_TEST_* licensing settings are for end-to-end tests; the service warns loudly when they are set.
    app = await buildApp({ engine, dataDir: options.dataDir, logLevel: config.log.level, license: licenseSettingsFromEnv(process.env) });
  } catch (error) {
    await engine.close().catch(() => {});
    throw error;
  }
  if (engineProblem !== null) app.log.error(`starting without the filtering engine: ${engineProblem}`);

  try {
    await app.listen({ host: listen.host, port: listen.port });
  } catch (error) {
    await app.close().catch(() => {});
    await engine.close().catch(() => {});
    throw error;
  }
  const listeners = new ListenerSwitch(app, listen);
  app.log.info({ url: listeners.url, dataDir: options.dataDir }, 'listening');
  // GET /config shows the address in effect (--listen, or the port the OS chose), not only the file's.
  app.netclamp.config.setLiveListen(listeners.listen);
  // [server] listen changes (PUT /config or an edit of config.toml) move the service to the new address.
  // --listen only decides the address at start: a later change of the config is the user's newer wish.
  app.netclamp.config.addApplier({
    async prepare(next, previous) {
      if (next.server.listen === previous.server.listen) return undefined;
      const replacement = await listeners.bind(parseListen(next.server.listen), next.server.listen);
      return {
        commit: () => {
          listeners.switchTo(replacement);
          app.netclamp.config.setLiveListen(listeners.listen);
        },
        abort: () => { replacement.server.close(); },
      };
    },
  });

  let closing: Promise<void> | undefined;
  return {
    app, engine, dataDir: options.dataDir,
    get url() { return listeners.url; },
    close() {
      closing ??= (async () => {
        try {
          listeners.stopAccepting();
          await app.close();
        } finally {
          listeners.forceClose();
          await engine.close();
        }
      })();
      return closing;
    },
  };
}

/** HOST:PORT as config.toml spells it, with the port the server really has (port 0 resolved). */
function listenOf(server: http.Server, fallback: ListenAddress): string {
  const address = server.address() as AddressInfo | string | null;
  const port = typeof address === 'object' && address !== null ? address.port : fallback.port;
  const host = fallback.host.includes(':') ? `[${fallback.host}]` : fallback.host;
  return `${host}:${port}`;
}


interface BoundListener {
  server: http.Server;
  /** HOST:PORT it is bound to. */
  listen: string;
}

/**
 * The HTTP listener(s) in front of the app. fastify listens once; a new address gets a new http.Server
 * with fastify's own request handler, and the previous one is retired: it stops accepting at once, idle
 * keep-alive connections are closed as they become idle (so the reply to the PUT that moved us is still
 * delivered on its connection), and whatever is left after LISTENER_RETIRE_GRACE_MS is cut.
 */
class ListenerSwitch {
  private current: http.Server;
  private currentListen: string;
  private readonly retiring = new Set<{ server: http.Server; timers: NodeJS.Timeout[] }>();

  constructor(private readonly app: FastifyInstance, listen: ListenAddress) {
    this.current = app.server;
    this.currentListen = listenOf(app.server, listen);
  }

  get url(): string {
    return `http://${this.currentListen}`;
  }

  /** HOST:PORT of the current listener. */
  get listen(): string {
    return this.currentListen;
  }

  /** Listens on the new address without touching the current one; throws a ConfigError if it cannot. */
  async bind(address: ListenAddress, spelled: string): Promise<BoundListener> {
    const template = this.app.server;
    const server = http.createServer();
    // The same handler fastify installed, so both listeners are the same app (hooks, routes, 503 on close).
    for (const event of ['request', 'clientError', 'checkContinue'] as const) {
      for (const listener of template.listeners(event)) server.on(event, listener as (...args: unknown[]) => void);
    }
    server.keepAliveTimeout = template.keepAliveTimeout;
    server.requestTimeout = template.requestTimeout;
    server.headersTimeout = template.headersTimeout;
    server.timeout = template.timeout;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: address.host, port: address.port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new ConfigError('config', [{ field: 'server.listen', message: `cannot listen on ${spelled}: ${code ?? (error as Error).message}` }]);
    }
    return { server, listen: listenOf(server, address) };
  }

  switchTo(replacement: BoundListener): void {
    const previous = this.current;
    this.current = replacement.server;
    this.currentListen = replacement.listen;
    this.app.log.info({ url: this.url }, 'listening (address changed)');
    this.retire(previous);
  }

  /** Shutdown, step 1: the current listener stops accepting (fastify closes its own). */
  stopAccepting(): void {
    if (this.current !== this.app.server) {
      this.current.close();
      this.current.closeIdleConnections();
    }
  }

  /** Shutdown, step 2: nothing survives the app. */
  forceClose(): void {
    this.current.closeAllConnections();
    for (const entry of this.retiring) {
      for (const timer of entry.timers) clearInterval(timer);
      entry.server.closeAllConnections();
    }
    this.retiring.clear();
  }

  private retire(server: http.Server): void {
    // Closing fastify's own server here is fine: its close() later treats "not running" as done.
    server.close();
    server.closeIdleConnections();
    const sweep = setInterval(() => server.closeIdleConnections(), 100);
    const cut = setTimeout(() => server.closeAllConnections(), LISTENER_RETIRE_GRACE_MS);
    sweep.unref();
    cut.unref();
    const entry = { server, timers: [sweep, cut] };
    this.retiring.add(entry);
    server.once('close', () => {
      clearInterval(sweep);
      clearTimeout(cut);
      this.retiring.delete(entry);
    });
  }
}
