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
  return { ...row, enabled: row.enabled !== 0 };
}

const COLUMNS = `id, name, app_path, action, direction, remote_address, remote_port, protocol,
  rate_limit_down_bytes_per_sec, rate_limit_up_bytes_per_sec, limit_scope, match_mode, priority, enabled,
  revision, sync_state, sync_error, group_id, created_at, updated_at`;

export class RulesStore {
  constructor(private readonly db: Db) {}

  list(): StoredRule[] {
    return (this.db.prepare(`SELECT ${COLUMNS} FROM rules ORDER BY id`).all() as RuleRow[]).map(fromRow);
  }

  get(id: number): StoredRule | undefined {
    const row = this.db.prepare(`SELECT ${COLUMNS} FROM rules WHERE id = ?`).get(id) as RuleRow | undefined;
    return row === undefined ? undefined : fromRow(row);
  }

  /** `groupId`: the installed group that owns the rule (read-only through /rules), null for the user's own. */
  insert(draft: RuleDraft, syncState: SyncState, now: string, groupId: string | null = null): StoredRule {
    const info = this.db.prepare(
      `INSERT INTO rules (name, app_path, action, direction, remote_address, remote_port, protocol,
         rate_limit_down_bytes_per_sec, rate_limit_up_bytes_per_sec, limit_scope, match_mode, priority, enabled,
         revision, sync_state, sync_error, group_id, created_at, updated_at)
       VALUES (@name, @app_path, @action, @direction, @remote_address, @remote_port, @protocol,
         @rate_limit_down_bytes_per_sec, @rate_limit_up_bytes_per_sec, @limit_scope, @match_mode, @priority, @enabled,
         1, @sync_state, NULL, @group_id, @now, @now)`,
    ).run({ ...draft, enabled: draft.enabled ? 1 : 0, sync_state: syncState, now, group_id: groupId });
    return this.get(Number(info.lastInsertRowid))!;
  }

  /** Replaces the draft fields, bumps the revision, and drops the saved counters (a changed rule starts at 0). */
  replace(id: number, draft: RuleDraft, syncState: SyncState, now: string): StoredRule {
    return this.transaction(() => {
      this.replaceDraft(id, draft, syncState, now);
      this.deleteCounters(id);
      return this.get(id)!;
    });
  }

  private replaceDraft(id: number, draft: RuleDraft, syncState: SyncState, now: string): void {
    this.db.prepare(
      `UPDATE rules SET name = @name, app_path = @app_path, action = @action, direction = @direction,
         remote_address = @remote_address, remote_port = @remote_port, protocol = @protocol,
         rate_limit_down_bytes_per_sec = @rate_limit_down_bytes_per_sec,
         rate_limit_up_bytes_per_sec = @rate_limit_up_bytes_per_sec, limit_scope = @limit_scope,
         match_mode = @match_mode, priority = @priority, enabled = @enabled, revision = revision + 1,
         sync_state = @sync_state, sync_error = NULL, updated_at = @now
       WHERE id = @id`,
    ).run({ ...draft, enabled: draft.enabled ? 1 : 0, sync_state: syncState, now, id });
  }

  /** Puts back a row exactly as it was (undo of a write the engine could not apply). */
  restore(rule: StoredRule): void {
    this.db.prepare(
      `INSERT OR REPLACE INTO rules (${COLUMNS}) VALUES (@id, @name, @app_path, @action, @direction,
         @remote_address, @remote_port, @protocol, @rate_limit_down_bytes_per_sec, @rate_limit_up_bytes_per_sec,
         @limit_scope, @match_mode, @priority, @enabled, @revision, @sync_state, @sync_error, @group_id,
         @created_at, @updated_at)`,
    ).run({ ...rule, enabled: rule.enabled ? 1 : 0 });
  }

  /** Records a sync outcome, but only for the revision it was computed for (a newer write wins). */
  setSyncState(id: number, revision: number, syncState: SyncState, syncError: string | null): void {
    this.db.prepare('UPDATE rules SET sync_state = ?, sync_error = ? WHERE id = ? AND revision = ?')
      .run(syncState, syncError, id, revision);
  }

  listByGroup(groupId: string): StoredRule[] {
    return (this.db.prepare(`SELECT ${COLUMNS} FROM rules WHERE group_id = ? ORDER BY id`).all(groupId) as RuleRow[]).map(fromRow);
  }

  /** Runs `work` as one SQLite transaction (all or nothing); other stores on the same database may join. */
  transaction<T>(work: () => T): T {
    return this.db.transaction(work)();
  }

  /** Deletes the rule and its saved counters. */
  delete(id: number): boolean {
    return this.transaction(() => {
      this.deleteCounters(id);
      return this.db.prepare('DELETE FROM rules WHERE id = ?').run(id).changes > 0;
    });
  }

  /** Saved counters of every rule that has any. */
  counters(): Map<number, CounterValues> {
    const rows = this.db.prepare('SELECT rule_id, bytes_up, bytes_down, blocked_count FROM rule_counters').all() as Array<CounterValues & { rule_id: number }>;
    return new Map(rows.map(({ rule_id, ...values }) => [rule_id, values]));
  }

  /** Saves counters in one transaction; entries of rules that no longer exist are skipped. */
  saveCounters(entries: ReadonlyArray<{ id: number; values: CounterValues }>): void {
    const upsert = this.db.prepare(
      `INSERT INTO rule_counters (rule_id, bytes_up, bytes_down, blocked_count)
       SELECT id, @bytes_up, @bytes_down, @blocked_count FROM rules WHERE id = @id
       ON CONFLICT(rule_id) DO UPDATE SET bytes_up = excluded.bytes_up, bytes_down = excluded.bytes_down,
         blocked_count = excluded.blocked_count`,
    );
    this.transaction(() => {
      for (const { id, values } of entries) upsert.run({ id, ...values });
    });
  }

  private deleteCounters(id: number): void {
    this.db.prepare('DELETE FROM rule_counters WHERE rule_id = ?').run(id);
  }
}
