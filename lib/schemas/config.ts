/**
 * config.toml: the whole document's schema. Every section and key is optional in the file; `loadConfig`
 * fills the defaults, so the rest of the service always sees a complete `Config`. The same schema checks
 * the body of PUT /config (the JSON rendering of the same document).
 */
import Type, { type Static } from 'typebox';

export const DEFAULT_LISTEN = '127.0.0.1:9845';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export const DEFAULT_HEARTBEAT_SEC = 15;
export const DEFAULT_REPLAY_BUFFER = 1000;

const serverProperties = {
  /** HOST:PORT, IPv6 hosts in brackets ("[::1]:9845"). */
  listen: Type.String({ minLength: 3, maxLength: 300, default: DEFAULT_LISTEN }),
};
const logProperties = {
  level: Type.Enum(LOG_LEVELS, { default: 'info' }),
};
const eventsProperties = {
  /** The contract asks for a heartbeat at least every 15 s; shorter is for tests and picky proxies. */
  heartbeat_sec: Type.Integer({ minimum: 1, maximum: DEFAULT_HEARTBEAT_SEC, default: DEFAULT_HEARTBEAT_SEC }),
  /** Events kept for Last-Event-ID replay. */
  replay_buffer: Type.Integer({ minimum: 1, maximum: 100_000, default: DEFAULT_REPLAY_BUFFER }),
};
const licenseProperties = {
  /** Base URL of the license server; "" = none configured (licensing endpoints that need it fail). */
  server_url: Type.String({ maxLength: 2048, default: '' }),
};

/** The document as written: every section and key optional, unknown keys refused. */
export const ConfigSchema = Type.Object({
  server: Type.Optional(Type.Object({
    listen: Type.Optional(serverProperties.listen),
  }, { additionalProperties: false })),
  log: Type.Optional(Type.Object({
    level: Type.Optional(logProperties.level),
  }, { additionalProperties: false })),
  events: Type.Optional(Type.Object({
    heartbeat_sec: Type.Optional(eventsProperties.heartbeat_sec),
    replay_buffer: Type.Optional(eventsProperties.replay_buffer),
  }, { additionalProperties: false })),
  license: Type.Optional(Type.Object({
    server_url: Type.Optional(licenseProperties.server_url),
  }, { additionalProperties: false })),
}, { additionalProperties: false });
export type ConfigInput = Static<typeof ConfigSchema>;

/** The effective config, every default filled in: what GET /config answers. */
export const EffectiveConfigSchema = Type.Object({
  server: Type.Object(serverProperties),
  log: Type.Object(logProperties),
  events: Type.Object(eventsProperties),
  license: Type.Object(licenseProperties),
});

export interface Config {
  server: { listen: string };
  log: { level: typeof LOG_LEVELS[number] };
  events: { heartbeat_sec: number; replay_buffer: number };
  license: { server_url: string };
}
