/**
 * The live config: what GET /config shows, what PUT /config replaces, and what an edit of config.toml on
 * disk changes. One change at a time (a queue), each validated as a whole before anything is applied.
 *
 * - PUT: validate, bind the new listen address if it changed (so "address in use" is a 400 and nothing
 *   is written), write the file atomically, apply, send `config_reloaded` (source "api").
 * - External edit: fs.watch on the data dir (debounced). Text equal to what the service last loaded or
 *   wrote is ignored, so the service's own writes are never reported a second time. A valid edit is
 *   applied and sends `config_reloaded` (source "file"); an invalid one keeps the last good config and
 *   sends `config_error`. The file is not rewritten in either case: it is the user's.
 * - The live listen address (server.ts tells it, see `setLiveListen`) is part of the effective config:
 *   `--listen`, or the port the OS chose for port 0, shows in GET, and a PUT naming it moves nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import type { Config } from '../schemas/config.js';
import type { FieldError } from '../schemas/problem.js';
import { writeFileAtomic } from './atomic-file.js';
import { CONFIG_FILE, ConfigError, configFromDocument, configFromText, renderConfig } from './config.js';
import type { EventBus } from './event-bus.js';

export const CONFIG_DEBOUNCE_MS = 200;

export type ConfigSource = 'api' | 'file';

/** What a prepared change does once the whole change is committed, or when it is called off. */
export interface PreparedChange {
  commit?(): void;
  abort?(): void;
}

/** Applies a config to one part of the service. */
export interface ConfigApplier {
  /**
   * Runs before anything is written or applied, and may refuse the change by throwing a ConfigError
   * (e.g. the new listen address cannot be bound). A refusal aborts what other appliers prepared.
   */
  prepare?(next: Config, previous: Config): Promise<PreparedChange | void>;
  /** Runs once the change is committed; must not throw. */
  apply?(next: Config, previous: Config): void;
}

export interface ConfigServiceOptions {
  dataDir: string;
  initial: Config;
  /** The text the initial config was read from (so an unchanged file is not a change). */
  initialText: string | null;
  events: EventBus;
  log: FastifyBaseLogger;
  debounceMs?: number;
}

/** Field paths whose value differs, e.g. ["server.listen"]. */
export function changedFields(previous: Config, next: Config): string[] {
  const changed: string[] = [];
  for (const section of Object.keys(next) as (keyof Config)[]) {
    const before = previous[section] as Record<string, unknown>;
    const after = next[section] as Record<string, unknown>;
    for (const key of Object.keys(after)) {
      if (before[key] !== after[key]) changed.push(`${section}.${key}`);
    }
  }
  return changed;
}

export class ConfigService {
  private readonly file: string;
  private readonly events: EventBus;
  private readonly log: FastifyBaseLogger;
  private readonly debounceMs: number;
  private readonly appliers: ConfigApplier[] = [];
  private config: Config;
  /** server.listen as config.toml (or the last PUT, which wrote it) says it. */
  private fileListen: string;
  /** The address in effect when it is not the file's (`--listen`, a port the OS chose); else null. */
  private listenOverride: string | null = null;
  private lastText: string | null;
  private queue: Promise<unknown> = Promise.resolve();
  private watcher: fs.FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: ConfigServiceOptions) {
    this.file = path.join(options.dataDir, CONFIG_FILE);
    this.config = options.initial;
    this.fileListen = options.initial.server.listen;
    this.lastText = options.initialText;
    this.events = options.events;
    this.log = options.log;
    this.debounceMs = options.debounceMs ?? CONFIG_DEBOUNCE_MS;
  }

  current(): Config {
    return structuredClone(this.config);
  }

  /**
   * The address the service really listens on, HOST:PORT (server.ts, once bound). When it is not the
   * file's, it stays the effective server.listen until a PUT, or an edit of the file's own server.listen,
   * asks for another address.
   */
  setLiveListen(listen: string): void {
    this.listenOverride = listen === this.fileListen ? null : listen;
    this.config = { ...this.config, server: { ...this.config.server, listen } };
  }

  addApplier(applier: ConfigApplier): void {
    this.appliers.push(applier);
  }

  /** PUT: the whole document (JSON form). Throws ConfigError naming the fields; then nothing changed. */
  replace(document: unknown): Promise<Config> {
    return this.exclusive(async () => {
      // Compared with the effective config: a PUT of what GET showed changes nothing, listener included.
      const next = configFromDocument(document, 'config');
      const text = renderConfig(next);
      await this.commit(next, 'api', next.server.listen, () => {
        writeFileAtomic(this.file, text, 0o600);
        this.lastText = text;
      });
      return this.current();
    });
  }

  /** Starts watching config.toml for edits made outside the service. */
  watch(): void {
    if (this.watcher !== undefined || this.closed) return;
    // The directory, not the file: editors and our own writer replace the file by rename, which would
    // leave a watch on the old inode deaf.
    this.watcher = fs.watch(path.dirname(this.file), { persistent: false }, (_type, filename) => {
      if (filename !== null && filename !== CONFIG_FILE) return;
      if (this.debounce !== undefined) clearTimeout(this.debounce);
      this.debounce = setTimeout(() => {
        this.debounce = undefined;
        void this.exclusive(() => this.reloadFromDisk()).catch((error: unknown) => {
          this.log.error({ err: error }, 'config reload failed');
        });
      }, this.debounceMs);
    });
    this.watcher.on('error', (error) => this.log.warn({ err: error }, 'config.toml watcher failed; external edits are no longer picked up'));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.debounce !== undefined) clearTimeout(this.debounce);
    this.watcher?.close();
    this.watcher = undefined;
    await this.queue.catch(() => {});
  }

  private async reloadFromDisk(): Promise<void> {
    if (this.closed) return;
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      if (this.lastText === null) return;
      this.lastText = null;
      this.reportError([{ field: '(file)', message: `${CONFIG_FILE} was removed; the last good config stays in effect` }]);
      return;
    }
    if (text === this.lastText) return; // our own write, or a save without changes
    this.lastText = text;
    try {
      const parsed = configFromText(text, CONFIG_FILE);
      // An edit that leaves the file's own listen alone does not undo --listen.
      const keepLive = this.listenOverride !== null && parsed.server.listen === this.fileListen;
      const next = keepLive ? { ...parsed, server: { ...parsed.server, listen: this.listenOverride! } } : parsed;
      await this.commit(next, 'file', parsed.server.listen, () => {});
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      this.reportError(error.errors);
    }
  }

  private reportError(errors: FieldError[]): void {
    const detail = `${CONFIG_FILE}: ${errors.map((e) => `${e.field}: ${e.message}`).join('; ')}; the last good config stays in effect`;
    this.log.warn({ errors }, 'invalid config.toml edit ignored');
    this.events.emit('config_error', { source: 'file', detail, errors });
  }

  /** Prepare every applier (any may refuse), persist, swap, apply, announce. */
  private async commit(next: Config, source: ConfigSource, fileListen: string, persist: () => void): Promise<void> {
    const previous = this.config;
    const prepared: PreparedChange[] = [];
    try {
      for (const applier of this.appliers) {
        const change = await applier.prepare?.(next, previous);
        if (change !== undefined) prepared.push(change);
      }
      persist();
    } catch (error) {
      for (const change of prepared) {
        try { change.abort?.(); } catch (abortError) { this.log.error({ err: abortError }, 'calling off a config change failed'); }
      }
      throw error; // a ConfigError is the user's mistake (400 / config_error); anything else is ours (500)
    }
    this.config = next;
    this.fileListen = fileListen;
    this.listenOverride = next.server.listen === fileListen ? null : next.server.listen;
    for (const applier of this.appliers) {
      try { applier.apply?.(next, previous); } catch (error) { this.log.error({ err: error }, 'applying config failed'); }
    }
    for (const change of prepared) {
      try { change.commit?.(); } catch (error) { this.log.error({ err: error }, 'finishing a config change failed'); }
    }
    const changed = changedFields(previous, next);
    this.log.info({ source, changed }, 'config applied');
    this.events.emit('config_reloaded', { source, changed });
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => {});
    return run;
  }
}
