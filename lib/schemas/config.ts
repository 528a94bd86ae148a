/**
 * config.toml: the whole document's schema. Every section and key is optional in the file; `loadConfig`
 * fills the defaults, so the rest of the service always sees a complete `Config`.
 */
import Type, { type Static } from 'typebox';

export const DEFAULT_LISTEN = '127.0.0.1:9845';

export const ConfigSchema = Type.Object({
  server: Type.Optional(Type.Object({
    /** HOST:PORT, IPv6 hosts in brackets ("[::1]:9845"). */
    listen: Type.Optional(Type.String({ minLength: 3, maxLength: 300, default: DEFAULT_LISTEN })),
  }, { additionalProperties: false, default: {} })),
  log: Type.Optional(Type.Object({
    level: Type.Optional(Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace'], { default: 'info' })),
  }, { additionalProperties: false, default: {} })),
}, { additionalProperties: false });
export type ConfigInput = Static<typeof ConfigSchema>;

export interface Config {
  server: { listen: string };
  log: { level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' };
}
