/**
 * The service as a fastify plugin, given an Engine (dependency injection: the CLI passes the native
 * engine, route tests a fake). `buildApp` wraps it in a configured fastify instance.
 *
 * The plugin owns the database, the token and the watchers of one data dir, and closes them in onClose.
 * It does not own the engine: whoever opened it closes it, after the app.
 */
import path from 'node:path';
import Fastify, { LogController, type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import { pino, type Logger } from 'pino';
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Engine } from './engine/engine.js';
import { installGatekeeping, installProblemHandlers } from './http/hooks.js';
import { openDatabase } from './store/database.js';
import { RulesStore } from './store/rules-store.js';
import { MetaStore } from './store/meta-store.js';
import { loadOrCreateToken, TokenVerifier } from './services/auth-token.js';
import { AppPathWatcher } from './services/app-path-watcher.js';
import { RuleService } from './services/rule-service.js';
import { BlockedTotal } from './services/blocked-total.js';
import statusRoutes from './routes/status.js';
import ruleRoutes from './routes/rules.js';
import { VERSION } from './version.js';

export const API_PREFIX = '/api/v1';
export const LOG_FILE = 'service.log';
/** How often counters that must survive a restart are written to SQLite. */
export const COUNTER_FLUSH_INTERVAL_MS = 5_000;

export interface AppOptions {
  engine: Engine;
  dataDir: string;
  /** Defaults to the package version. */
  version?: string;
  counterFlushIntervalMs?: number;
}

/** The plugin. Registered with skip-override so its hooks and handlers cover the whole instance. */
export const serviceApp: FastifyPluginAsync<AppOptions> = async (app, options) => {
  const startedAt = new Date();
  const token = loadOrCreateToken(options.dataDir);
  const tokens = new TokenVerifier(token);
  const db = openDatabase(options.dataDir);
  const store = new RulesStore(db);
  const meta = new MetaStore(db);
  const watcher = new AppPathWatcher((error, target) => app.log.warn({ err: error, target }, 'cannot watch app path'));
  const rules = new RuleService({ engine: options.engine, store, watcher, log: app.log });
  const blocked = new BlockedTotal(options.engine, meta);

  app.setValidatorCompiler(TypeBoxValidatorCompiler);
  // JSON only: a text/plain body is 415, not a string that fails validation. An empty JSON body (some
  // clients send Content-Type on a bodyless POST such as /retry) counts as no body.
  app.removeContentTypeParser('text/plain');
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') {
      done(null, undefined);
      return;
    }
    parseJson(request, text, done);
  });
  installProblemHandlers(app);
  installGatekeeping(app, tokens);

  const flushTimer = setInterval(() => {
    blocked.sample().then(() => blocked.flush(), (error: unknown) => app.log.warn({ err: error }, 'counter flush failed'));
  }, options.counterFlushIntervalMs ?? COUNTER_FLUSH_INTERVAL_MS);
  flushTimer.unref();

  app.addHook('onClose', async () => {
    clearInterval(flushTimer);
    await rules.close();
    try {
      await blocked.sample();
      blocked.flush();
    } finally {
      db.close();
    }
  });

  await rules.syncAll();

  const api = app.withTypeProvider<TypeBoxTypeProvider>();
  await api.register(statusRoutes, {
    prefix: API_PREFIX, engine: options.engine, rules, blocked, version: options.version ?? VERSION, startedAt,
  });
  await api.register(ruleRoutes, { prefix: API_PREFIX, rules, basePath: API_PREFIX });
};
// What fastify-plugin does: run in the caller's context instead of an encapsulated child.
(serviceApp as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;

export interface BuildAppOptions extends AppOptions {
  /** Defaults to a pino logger writing to service.log in the data dir. */
  logger?: Logger;
  logLevel?: string;
}

export async function buildApp(options: BuildAppOptions): Promise<FastifyInstance> {
  const logger = options.logger ?? pino(
    { level: options.logLevel ?? 'info' },
    pino.destination({ dest: path.join(options.dataDir, LOG_FILE), mkdir: true, sync: true }),
  );
  const app = Fastify({
    loggerInstance: logger,
    // service.log is for what went wrong, not an access log.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
    return503OnClosing: true,
  });
  const { engine, dataDir, version, counterFlushIntervalMs } = options;
  await app.register(serviceApp, { engine, dataDir, version, counterFlushIntervalMs });
  await app.ready();
  return app as unknown as FastifyInstance;
}
