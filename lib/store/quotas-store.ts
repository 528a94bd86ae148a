/** Quotas in SQLite. Synchronous (better-sqlite3): each call is one statement or one transaction. */
import type { Db } from './database.js';
import type { QuotaDraft } from '../schemas/quota.js';

/** A quota as stored: the draft, bookkeeping and the persisted part of its counting state. */
export interface StoredQuota extends QuotaDraft {
  id: number;
  revision: number;
  group_id: string | null;
  used_bytes: number;
  period_start: string | null;
  period_end: string | null;
  exceeded: boolean;
  exceeded_at: string | null;
  created_at: string;
  updated_at: string;
}

interface QuotaRow extends Omit<StoredQuota, 'enabled' | 'exceeded'> {
  enabled: number;
  exceeded: number;
}

function fromRow(row: QuotaRow): StoredQuota {
  return { ...row, enabled: row.enabled !== 0, exceeded: row.exceeded !== 0 };
}

const COLUMNS = `id, name, app_path, match_mode, direction, limit_bytes, period, on_exceed,
  limit_rate_bytes_per_sec, enabled, revision, group_id, used_bytes, period_start, period_end, exceeded,
  exceeded_at, created_at, updated_at`;

/** The counting state of one quota period. */
export interface QuotaPeriodState {
  used_bytes: number;
  period_start: string | null;
  period_end: string | null;
  exceeded: boolean;
  exceeded_at: string | null;
}

export class QuotasStore {
  constructor(private readonly db: Db) {}

  list(): StoredQuota[] {
    return (this.db.prepare(`SELECT ${COLUMNS} FROM quotas ORDER BY id`).all() as QuotaRow[]).map(fromRow);
  }

  get(id: number): StoredQuota | undefined {
    const row = this.db.prepare(`SELECT ${COLUMNS} FROM quotas WHERE id = ?`).get(id) as QuotaRow | undefined;
    return row === undefined ? undefined : fromRow(row);
  }

  insert(draft: QuotaDraft, period: QuotaPeriodState, now: string, groupId: string | null = null): StoredQuota {
    const info = this.db.prepare(
      `INSERT INTO quotas (name, app_path, match_mode, direction, limit_bytes, period, on_exceed,
         limit_rate_bytes_per_sec, enabled, revision, group_id, used_bytes, period_start, period_end, exceeded,
         exceeded_at, created_at, updated_at)
       VALUES (@name, @app_path, @match_mode, @direction, @limit_bytes, @period, @on_exceed,
         @limit_rate_bytes_per_sec, @enabled, 1, @group_id, @used_bytes, @period_start, @period_end, @exceeded,
         @exceeded_at, @now, @now)`,
    ).run({
      ...draft, ...period, enabled: draft.enabled ? 1 : 0, exceeded: period.exceeded ? 1 : 0, group_id: groupId, now,
    });
    return this.get(Number(info.lastInsertRowid))!;
  }

  /** Replaces the draft and the period state, bumps the revision. */
  replace(id: number, draft: QuotaDraft, period: QuotaPeriodState, now: string): StoredQuota {
    this.db.prepare(
      `UPDATE quotas SET name = @name, app_path = @app_path, match_mode = @match_mode, direction = @direction,
         limit_bytes = @limit_bytes, period = @period, on_exceed = @on_exceed,
         limit_rate_bytes_per_sec = @limit_rate_bytes_per_sec, enabled = @enabled, revision = revision + 1,
         used_bytes = @used_bytes, period_start = @period_start, period_end = @period_end, exceeded = @exceeded,
         exceeded_at = @exceeded_at, updated_at = @now
       WHERE id = @id`,
    ).run({ ...draft, ...period, enabled: draft.enabled ? 1 : 0, exceeded: period.exceeded ? 1 : 0, now, id });
    return this.get(id)!;
  }

  /** Writes the counting state (counter flush, exceed, reset, rollover); the revision stays. */
  setPeriodState(id: number, state: QuotaPeriodState): void {
    this.db.prepare(
      `UPDATE quotas SET used_bytes = @used_bytes, period_start = @period_start, period_end = @period_end,
         exceeded = @exceeded, exceeded_at = @exceeded_at WHERE id = @id`,
    ).run({ ...state, exceeded: state.exceeded ? 1 : 0, id });
  }

  /** Adds counted bytes to several quotas in one transaction (the periodic flush). */
  addUsage(deltas: ReadonlyMap<number, number>): void {
    const statement = this.db.prepare('UPDATE quotas SET used_bytes = used_bytes + ? WHERE id = ?');
    this.db.transaction(() => {
      for (const [id, bytes] of deltas) statement.run(bytes, id);
    })();
  }

  delete(id: number): boolean {
    return this.db.prepare('DELETE FROM quotas WHERE id = ?').run(id).changes > 0;
  }

  listByGroup(groupId: string): StoredQuota[] {
    return (this.db.prepare(`SELECT ${COLUMNS} FROM quotas WHERE group_id = ? ORDER BY id`).all(groupId) as QuotaRow[]).map(fromRow);
  }

  /** Puts back a row exactly as it was (undo of a group write the engine could not apply). */
  restore(quota: StoredQuota): void {
    this.db.prepare(
      `INSERT OR REPLACE INTO quotas (${COLUMNS}) VALUES (@id, @name, @app_path, @match_mode, @direction,
         @limit_bytes, @period, @on_exceed, @limit_rate_bytes_per_sec, @enabled, @revision, @group_id, @used_bytes,
         @period_start, @period_end, @exceeded, @exceeded_at, @created_at, @updated_at)`,
    ).run({ ...quota, enabled: quota.enabled ? 1 : 0, exceeded: quota.exceeded ? 1 : 0 });
  }
}
