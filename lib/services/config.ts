/**
 * config.toml: load, validate against the typebox schema (400-style field messages on error), fill the
 * defaults. The file is created with the defaults on first start so the user has something to edit.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parse, stringify } from 'smol-toml';
import { Compile } from 'typebox/compile';
import {
  ConfigSchema, DEFAULT_HEARTBEAT_SEC, DEFAULT_LISTEN, DEFAULT_REPLAY_BUFFER, type Config, type ConfigInput,
} from '../schemas/config.js';
import { fieldErrorsFromSchemaIssues } from '../http/problem.js';
import type { FieldError } from '../schemas/problem.js';
import { writeFileAtomic } from './atomic-file.js';

export const CONFIG_FILE = 'config.toml';
const configCheck = Compile(ConfigSchema);

export class ConfigError extends Error {
  readonly errors: FieldError[];
  constructor(file: string, errors: FieldError[]) {
    super(`${file}: ${errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`);
    this.name = 'ConfigError';
    this.errors = errors;
  }
}

export function defaultConfig(): Config {
  return {
    server: { listen: DEFAULT_LISTEN },
    log: { level: 'info' },
    events: { heartbeat_sec: DEFAULT_HEARTBEAT_SEC, replay_buffer: DEFAULT_REPLAY_BUFFER },
    license: { server_url: '' },
  };
}

/** Validates a parsed document and fills defaults; throws ConfigError naming the fields. */
export function configFromDocument(document: unknown, source = CONFIG_FILE): Config {
  if (!configCheck.Check(document)) {
    throw new ConfigError(source, fieldErrorsFromSchemaIssues(configCheck.Errors(document)));
  }
  const input = document as ConfigInput;
  const listen = input.server?.listen ?? DEFAULT_LISTEN;
  try {
    parseListen(listen);
  } catch (error) {
    throw new ConfigError(source, [{ field: 'server.listen', message: (error as Error).message }]);
  }
  const serverUrl = input.license?.server_url ?? '';
  if (serverUrl !== '' && !isHttpUrl(serverUrl)) {
    throw new ConfigError(source, [{ field: 'license.server_url', message: 'must be "" or an http(s) URL' }]);
  }
  return {
    server: { listen },
    log: { level: input.log?.level ?? 'info' },
    events: {
      heartbeat_sec: input.events?.heartbeat_sec ?? DEFAULT_HEARTBEAT_SEC,
      replay_buffer: input.events?.replay_buffer ?? DEFAULT_REPLAY_BUFFER,
    },
    license: { server_url: serverUrl },
  };
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'https:' || url.protocol === 'http:') && url.hostname !== '';
  } catch {
    return false;
  }
}

/** Parses and validates the text of config.toml; throws ConfigError naming the fields. */
export function configFromText(text: string, source = CONFIG_FILE): Config {
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new ConfigError(source, [{ field: '(toml)', message: (error as Error).message.split('\n')[0] ?? 'invalid TOML' }]);
  }
  return configFromDocument(document, source);
}

export function loadConfig(dataDir: string): Config {
  return loadConfigFile(dataDir).config;
}

/** The config and the text it came from (the live config service compares later edits with it). */
export function loadConfigFile(dataDir: string): { config: Config; text: string } {
  const file = path.join(dataDir, CONFIG_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    const config = defaultConfig();
    text = renderConfig(config);
    writeFileAtomic(file, text, 0o600);
    return { config, text };
  }
  return { config: configFromText(text, file), text };
}

export function renderConfig(config: Config): string {
  return `# NetClamp service configuration\n${stringify(config)}\n`;
}

export interface ListenAddress {
  host: string;
  port: number;
}

/** "HOST:PORT" or "[IPv6]:PORT"; port 0 asks the OS for a free port (tests use it). */
export function parseListen(value: string): ListenAddress {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]\s]+)):(\d{1,5})$/.exec(value);
  if (match === null) throw new Error('must be HOST:PORT (IPv6 as [ADDR]:PORT)');
  const port = Number(match[3]);
  if (port > 65535) throw new Error('port must be <= 65535');
  return { host: match[1] ?? match[2]!, port };
}
