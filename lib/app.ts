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
import type { Engine, EngineStatus } from './engine/engine.js';
import { installGatekeeping, installProblemHandlers } from './http/hooks.js';
import { openDatabase } from './store/database.js';
import { RulesStore } from './store/rules-store.js';
import { QuotasStore } from './store/quotas-store.js';
import { MetaStore } from './store/meta-store.js';
import { loadOrCreateToken, TokenVerifier } from './services/auth-token.js';
import { loadConfigFile } from './services/config.js';
import { ConfigService } from './services/config-service.js';
import { EventBus } from './services/event-bus.js';
import { EventStreamHub } from './services/event-stream.js';
import { AppPathWatcher } from './services/app-path-watcher.js';
import { COUNTER_MAX_AGE_MS, RuleService } from './services/rule-service.js';
import { QuotaService } from './services/quota-service.js';
import { BlockedTotal } from './services/blocked-total.js';
import { ActivityService } from './services/activity-service.js';
import { EngineSupervisor } from './services/engine-supervisor.js';
import { GroupService } from './services/group-service.js';
import type { FetchLimits } from './services/subscription-fetcher.js';
import { GroupsStore } from './store/groups-store.js';
import { LicenseStore } from './store/license-store.js';
import { openLicenseService } from './services/license-service.js';
import { engineHwidReader } from './license/hwid.js';
import type { LicenseSettings } from './license/settings.js';
import statusRoutes from './routes/status.js';
import throughputRoutes from './routes/throughput.js';
import connectionRoutes from './routes/connections.js';
import appRoutes from './routes/apps.js';
import ruleRoutes from './routes/rules.js';
import quotaRoutes from './routes/quotas.js';
import configRoutes from './routes/config.js';
import authRoutes from './routes/auth.js';
import eventRoutes from './routes/events.js';
import groupRoutes from './routes/groups.js';
import licenseRoutes from './routes/license.js';
import billingRoutes from './routes/billing.js';
import openApiRoutes, { RouteCatalog } from './routes/openapi.js';
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
  /** Per SSE client; a client further behind is dropped. Tests lower it. */
  maxEventBacklogBytes?: number;
  /** Debounce of config.toml change notifications. */
  configDebounceMs?: number;
  /**
   * How old the kernel counters of GET /rules and /status total_blocked may be (RuleService's
   * COUNTER_MAX_AGE_MS by default); 0 = read the kernel for every request.
   */
  counterMaxAgeMs?: number;
  /** Live-view sampling period (throughput ring, per-process rates); 0 = tests sample by hand. */
  sampleIntervalMs?: number;
  /** Clock of the live views, in epoch milliseconds (tests). */
  now?: () => number;
  /** How often the supervisor looks at the engine, and its re-open backoff. */
  engineCheckIntervalMs?: number;
  engineBackoffMs?: readonly number[];
  /** Quota counter sampling and its flush to SQLite; 0 = tests drive them by hand. */
  quotaSampleIntervalMs?: number;
  quotaFlushIntervalMs?: number;
  /** Wall clock of quota periods (tests). */
  quotaNow?: () => Date;
  /** Subscription fetch limits (timeout, size cap, redirects); tests shorten the timeout. */
  groupFetchLimits?: Partial<FetchLimits>;
  /** Licensing: upstream timeouts, clocks, and the explicit test settings (lib/license/settings.ts). */
  license?: LicenseSettings;
}

/** What the rest of the process (server.ts, tests) may reach of a running service. */
export interface ServiceHandles {
  config: ConfigService;
  events: EventBus;
  eventStream: EventStreamHub;
  activity: ActivityService;
  supervisor: EngineSupervisor;
  quotas: QuotaService;
}

declare module 'fastify' {
  interface FastifyInstance {
    netclamp: ServiceHandles;
  }
}

/** The plugin. Registered with skip-override so its hooks and handlers cover the whole instance. */
export const serviceApp: FastifyPluginAsync<AppOptions> = async (app, options) => {
  const startedAt = new Date();
  const token = loadOrCreateToken(options.dataDir);
  const tokens = new TokenVerifier(token);
  const initialConfig = loadConfigFile(options.dataDir);
  const events = new EventBus({
    capacity: initialConfig.config.events.replay_buffer,
    onListenerError: (error) => app.log.error({ err: error }, 'event listener failed'),
  });
  const eventStream = new EventStreamHub({
    bus: events,
    heartbeatSec: initialConfig.config.events.heartbeat_sec,
    maxBacklogBytes: options.maxEventBacklogBytes,
    onDrop: (reason) => app.log.warn(reason),
  });
  const config = new ConfigService({
    dataDir: options.dataDir, initial: initialConfig.config, initialText: initialConfig.text, events, log: app.log,
    debounceMs: options.configDebounceMs,
  });
  config.addApplier({
    apply(next, previous) {
      app.log.level = next.log.level;
      events.resize(next.events.replay_buffer);
      // Restarting the timer delays the next heartbeat, so only when the period really changed.
      if (next.events.heartbeat_sec !== previous.events.heartbeat_sec) eventStream.setHeartbeat(next.events.heartbeat_sec);
    },
  });

  const db = openDatabase(options.dataDir);
  const store = new RulesStore(db);
  const meta = new MetaStore(db);
  const license = await openLicenseService({
    store: new LicenseStore(db), events, log: app.log, serverUrl: () => config.current().license.server_url,
    readNativeHwid: engineHwidReader(options.engine), settings: options.license,
  });
  const watcher = new AppPathWatcher((error, target) => app.log.warn({ err: error, target }, 'cannot watch app path'));
  const counterAge = { maxAgeMs: options.counterMaxAgeMs ?? COUNTER_MAX_AGE_MS, clockMs: options.now };
  const rules = new RuleService({
    engine: options.engine, store, watcher, log: app.log, events, slots: license,
    counterMaxAgeMs: counterAge.maxAgeMs, clockMs: counterAge.clockMs,
    engineStatus: (): EngineStatus => supervisor.status(), // the supervisor is made below, from these rules
  });
  const groups = new GroupService({
    rules, rulesStore: store, quotasStore: new QuotasStore(db), store: new GroupsStore(db), events, log: app.log,
    slots: license, fetchLimits: options.groupFetchLimits,
  });
  const blocked = new BlockedTotal(options.engine, meta, counterAge);
  const quotas = new QuotaService({
    engine: options.engine, store: new QuotasStore(db), events, log: app.log, slots: license, now: options.quotaNow,
    sampleIntervalMs: options.quotaSampleIntervalMs, flushIntervalMs: options.quotaFlushIntervalMs,
  });
  const activity = new ActivityService({
    engine: options.engine,
    listRules: () => rules.list(),
    listQuotas: () => quotas.list(),
    now: options.now,
    intervalMs: options.sampleIntervalMs,
    onError: (error) => app.log.debug({ err: error }, 'live-view sample failed'),
  });
  const supervisor = new EngineSupervisor({
    engine: options.engine,
    events,
    reapplyRules: async () => {
      await rules.syncAll();
      return rules.summary().activeRules;
    },
    checkIntervalMs: options.engineCheckIntervalMs,
    backoffMs: options.engineBackoffMs,
    onError: (error, attempt) => app.log.warn({ err: error, attempt }, 'engine re-open failed'),
  });
  app.decorate('netclamp', { config, events, eventStream, activity, supervisor, quotas });

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
    rules.flushCounters().catch((error: unknown) => app.log.warn({ err: error }, 'rule counter flush failed'));
  }, options.counterFlushIntervalMs ?? COUNTER_FLUSH_INTERVAL_MS);
  flushTimer.unref();

  // SSE streams never end by themselves; the HTTP server cannot close while they are open.
  app.addHook('preClose', async () => {
    eventStream.closeAll();
  });
  app.addHook('onClose', async () => {
    clearInterval(flushTimer);
    activity.stop();
    await supervisor.stop();
    await groups.close();
    await config.close();
    await rules.close();
    await quotas.close();
    try {
      await blocked.sample();
      blocked.flush();
    } finally {
      db.close();
    }
  });

  await rules.syncAll();
  await quotas.start();
  config.watch();
  groups.start();

  // Before any route: the OpenAPI document is generated from what this hook sees.
  const catalog = new RouteCatalog();
  app.addHook('onRoute', catalog.hook);

  const version = options.version ?? VERSION;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();
  await api.register(statusRoutes, {
    prefix: API_PREFIX, engine: options.engine, rules, blocked, version, startedAt, activity, supervisor,
    onError: (error: unknown) => app.log.debug({ err: error }, 'a live /status figure failed'),
  });
  await api.register(throughputRoutes, { prefix: API_PREFIX, activity });
  await api.register(connectionRoutes, { prefix: API_PREFIX, activity });
  await api.register(appRoutes, { prefix: API_PREFIX, activity });
  await api.register(ruleRoutes, { prefix: API_PREFIX, rules, basePath: API_PREFIX });
  await api.register(quotaRoutes, { prefix: API_PREFIX, quotas, basePath: API_PREFIX });
  await api.register(configRoutes, { prefix: API_PREFIX, config });
  await api.register(authRoutes, { prefix: API_PREFIX, dataDir: options.dataDir, tokens, eventStream });
  await api.register(eventRoutes, { prefix: API_PREFIX, hub: eventStream });
  await api.register(groupRoutes, { prefix: API_PREFIX, groups, basePath: API_PREFIX });
  await api.register(licenseRoutes, { prefix: API_PREFIX, license });
  await api.register(billingRoutes, { prefix: API_PREFIX, license, basePath: API_PREFIX, now: options.license?.now });
  await api.register(openApiRoutes, { prefix: API_PREFIX, catalog, version });
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
  const { logger: _logger, logLevel: _logLevel, ...serviceOptions } = options;
  await app.register(serviceApp, serviceOptions);
  await app.ready();
  return app as unknown as FastifyInstance;
}
