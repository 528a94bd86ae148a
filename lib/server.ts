/**
 * Wires the real engine, the config and the app into a listening server. The native engine is imported
 * dynamically so that nothing but the running service ever loads the addon.
 */
import type { FastifyInstance } from 'fastify';
import type { Engine } from './engine/engine.js';
import { UnavailableEngine } from './engine/unavailable.js';
import { buildApp } from './app.js';
import { ensureDataDir } from './services/data-dir.js';
import { loadConfig, parseListen } from './services/config.js';

export interface ServeOptions {
  dataDir: string;
  /** HOST:PORT from the command line; overrides config.toml. */
  listen?: string | undefined;
  /** For tests of the wiring; the default loads the native engine. */
  engineFactory?: () => Promise<Engine>;
}

export interface RunningServer {
  app: FastifyInstance;
  engine: Engine;
  url: string;
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
    app = await buildApp({ engine, dataDir: options.dataDir, logLevel: config.log.level });
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
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : listen.port;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  const url = `http://${host}:${port}`;
  app.log.info({ url, dataDir: options.dataDir }, 'listening');

  let closing: Promise<void> | undefined;
  return {
    app, engine, url, dataDir: options.dataDir,
    close() {
      closing ??= (async () => {
        try {
          await app.close();
        } finally {
          await engine.close();
        }
      })();
      return closing;
    },
  };
}
