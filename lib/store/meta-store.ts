/** Small persisted values (counter baselines) in the meta table. */
import type { Db } from './database.js';

export class MetaStore {
  private readonly getStatement;
  private readonly setStatement;
  constructor(db: Db) {
    this.getStatement = db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?');
    this.setStatement = db.prepare<[string, string]>(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
    );
  }

  getNumber(key: string, fallback: number): number {
    const row = this.getStatement.get(key);
    const value = row === undefined ? NaN : Number(row.value);
    return Number.isFinite(value) ? value : fallback;
  }

  setNumber(key: string, value: number): void {
    this.setStatement.run(key, String(value));
  }
}
