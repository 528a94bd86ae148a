/** Rules in SQLite. Synchronous (better-sqlite3): each call is one statement or one transaction. */
import type { Db } from './database.js';
import type { RuleDraft, SyncState } from '../schemas/rule.js';

/** A rule as stored: the draft plus bookkeeping, without the live counters. */
export interface StoredRule extends RuleDraft {
  id: number;
  revision: number;
  sync_state: SyncState;
  sync_error: string | null;
  group_id: string | null;
  created_at: string;
  updated_at: string;
}

/** What a rule counted (the API's field names). */
export interface CounterValues {
  bytes_up: number;
  bytes_down: number;
  blocked_count: number;
}

interface RuleRow extends Omit<StoredRule, 'enabled'> {
  enabled: number;
}

function fromRow(row: RuleRow): StoredRule {
  return Object.freeze({ ...row, enabled: row.enabled !== 0 });
}

const COLUMNS = `id, name, app_path, action, direction, remote_address, remote_port, protocol,
  rate_limit_down_bytes_per_sec, rate_limit_up_bytes_per_sec, limit_scope, match_mode, priority, enabled,
  revision, sync_state, sync_error, group_id, created_at, updated_at`;

/** Prepared once: better-sqlite3 compiles the SQL on every prepare(). */
function prepareStatements(db: Db) {
  return {
    all: db.prepare(`SELECT ${COLUMNS} FROM rules ORDER BY id`),
    get: db.prepare(`SELECT ${COLUMNS} FROM rules WHERE id = ?`),
    nextId: db.prepare(
      `SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'rules'), 0),
                  COALESCE((SELECT MAX(id) FROM rules), 0)) + 1 AS id`,
    ),
    insert: db.prepare(
      `INSERT INTO rules (id, name, app_path, action, direction, remote_address, remote_port, protocol,
         rate_limit_down_bytes_per_sec, rate_limit_up_bytes_per_sec, limit_scope, match_mode, priority, enabled,
         revision, sync_state, sync_error, group_id, created_at, updated_at)
       VALUES (@id, @name, @app_path, @action, @direction, @remote_address, @remote_port, @protocol,
         @rate_limit_down_bytes_per_sec, @rate_limit_up_bytes_per_sec, @limit_scope, @match_mode, @priority, @enabled,
         1, @sync_state, @sync_error, @group_id, @now, @now)`,
    ),
    replace: db.prepare(
      `UPDATE rules SET name = @name, app_path = @app_path, action = @action, direction = @direction,
         remote_address = @remote_address, remote_port = @remote_port, protocol = @protocol,
         rate_limit_down_bytes_per_sec = @rate_limit_down_bytes_per_sec,
         rate_limit_up_bytes_per_sec = @rate_limit_up_bytes_per_sec, limit_scope = @limit_scope,
         match_mode = @match_mode, priority = @priority, enabled = @enabled, revision = revision + 1,
         sync_state = @sync_state, sync_error = @sync_error, updated_at = @now
       WHERE id = @id`,
    ),
    restore: db.prepare(
      `INSERT OR REPLACE INTO rules (${COLUMNS}) VALUES (@id, @name, @app_path, @action, @direction,
         @remote_address, @remote_port, @protocol, @rate_limit_down_bytes_per_sec, @rate_limit_up_bytes_per_sec,
         @limit_scope, @match_mode, @priority, @enabled, @revision, @sync_state, @sync_error, @group_id,
         @created_at, @updated_at)`,
    ),
    setSyncState: db.prepare('UPDATE rules SET sync_state = ?, sync_error = ? WHERE id = ? AND revision = ?'),
    delete: db.prepare('DELETE FROM rules WHERE id = ?'),
    counters: db.prepare('SELECT rule_id, bytes_up, bytes_down, blocked_count FROM rule_counters'),
    upsertCounters: db.prepare(
      `INSERT INTO rule_counters (rule_id, bytes_up, bytes_down, blocked_count)
       SELECT id, @bytes_up, @bytes_down, @blocked_count FROM rules WHERE id = @id
       ON CONFLICT(rule_id) DO UPDATE SET bytes_up = excluded.bytes_up, bytes_down = excluded.bytes_down,
         blocked_count = excluded.blocked_count`,
    ),
    deleteCounters: db.prepare('DELETE FROM rule_counters WHERE rule_id = ?'),
  };
}

/**
 * Every read of rules is served from memory: /rules, /status and each write need the whole table, and
 * SQLite builds a JS object per column per row on every SELECT (about 6 ms for 1000 rules on a small
 * VM). The cache holds the rows as SQLite has them: every write here re-reads the rows it touched, and a
 * transaction opened here that fails drops the cache (SQLite rolled back; the next read loads the table
 * again). Rows change only through this class; the objects handed out are frozen, callers copy to change.
 */
export class RulesStore {
  private readonly statements: ReturnType<typeof prepareStatements>;
  /** id -> row; null = not loaded (start, or after a rollback). */
  private rows: Map<number, StoredRule> | null = null;
  /** `list()`'s answer until the next write. */
  private snapshot: readonly StoredRule[] | null = null;

  constructor(private readonly db: Db) {
    this.statements = prepareStatements(db);
  }

  /** Every rule, by id; the same array until the next write. */
  list(): readonly StoredRule[] {
    this.snapshot ??= Object.freeze([...this.loaded().values()].sort((a, b) => a.id - b.id));
    return this.snapshot;
  }

  get(id: number): StoredRule | undefined {
    return this.loaded().get(id);
  }

  /**
   * The id the next `insert` without one would get (AUTOINCREMENT: never one a deleted rule had). The rule
   * service reserves it to put a rule into the kernel before its row is written, so the row is written once.
   */
  nextId(): number {
    return (this.statements.nextId.get() as { id: number }).id;
  }

  /**
   * `groupId`: the installed group that owns the rule (read-only through /rules), null for the user's own.
   * `id`: from `nextId()`, or a new one.
   */
  insert(draft: RuleDraft, syncState: SyncState, now: string, groupId: string | null = null, options: { id?: number; syncError?: string | null } = {}): StoredRule {
    const info = this.statements.insert.run({
      ...draft, enabled: draft.enabled ? 1 : 0, sync_state: syncState, sync_error: options.syncError ?? null, now, group_id: groupId,
      id: options.id ?? null,
    });
    return this.reload(Number(info.lastInsertRowid))!;
  }

  /**
   * Replaces the draft fields, bumps the revision, records the sync state, and drops the saved counters
   * (a changed rule starts at 0), in one transaction.
   */
  replace(id: number, draft: RuleDraft, syncState: SyncState, now: string, syncError: string | null = null): StoredRule {
    return this.transaction(() => {
      this.statements.replace.run({ ...draft, enabled: draft.enabled ? 1 : 0, sync_state: syncState, sync_error: syncError, now, id });
      this.statements.deleteCounters.run(id);
      return this.reload(id)!;
    });
  }

  /** Puts back a row exactly as it was (undo of a write the engine could not apply). */
  restore(rule: StoredRule): void {
    this.statements.restore.run({ ...rule, enabled: rule.enabled ? 1 : 0 });
    this.reload(rule.id);
  }

  /** Records a sync outcome, but only for the revision it was computed for (a newer write wins). */
  setSyncState(id: number, revision: number, syncState: SyncState, syncError: string | null): void {
    const current = this.get(id);
    if (current === undefined || current.revision !== revision) return;
    if (current.sync_state === syncState && current.sync_error === syncError) return; // nothing to commit
    this.statements.setSyncState.run(syncState, syncError, id, revision);
    this.reload(id);
  }

  listByGroup(groupId: string): StoredRule[] {
    return this.list().filter((rule) => rule.group_id === groupId);
  }

  /**
   * Runs `work` as one SQLite transaction (all or nothing); other stores on the same database may join.
   * A failure rolls SQLite back, so the cache, which followed the writes, is dropped.
   */
  transaction<T>(work: () => T): T {
    try {
      return this.db.transaction(work)();
    } catch (error) {
      this.invalidate();
      throw error;
    }
  }

  /** Deletes the rule and its saved counters. */
  delete(id: number): boolean {
    return this.transaction(() => {
      this.statements.deleteCounters.run(id);
      const deleted = this.statements.delete.run(id).changes > 0;
      this.reload(id);
      return deleted;
    });
  }

  /** Saved counters of every rule that has any. */
  counters(): Map<number, CounterValues> {
    const rows = this.statements.counters.all() as Array<CounterValues & { rule_id: number }>;
    return new Map(rows.map(({ rule_id, ...values }) => [rule_id, values]));
  }

  /** Saves counters in one transaction; entries of rules that no longer exist are skipped. */
  saveCounters(entries: ReadonlyArray<{ id: number; values: CounterValues }>): void {
    this.transaction(() => {
      for (const { id, values } of entries) this.statements.upsertCounters.run({ id, ...values });
    });
  }

  private loaded(): Map<number, StoredRule> {
    if (this.rows === null) {
      const rows = (this.statements.all.all() as RuleRow[]).map(fromRow);
      this.rows = new Map(rows.map((rule) => [rule.id, rule]));
    }
    return this.rows;
  }

  /** Brings the cached row `id` in line with SQLite after a write (gone if deleted). */
  private reload(id: number): StoredRule | undefined {
    this.snapshot = null;
    if (this.rows === null) return this.get(id); // loads everything, this row included
    const row = this.statements.get.get(id) as RuleRow | undefined;
    if (row === undefined) {
      this.rows.delete(id);
      return undefined;
    }
    const rule = fromRow(row);
    this.rows.set(id, rule);
    return rule;
  }

  private invalidate(): void {
    this.rows = null;
    this.snapshot = null;
  }
}
