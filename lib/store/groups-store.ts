/**
 * Installed groups and subscriptions in SQLite. Synchronous (better-sqlite3); callers that must change a
 * group together with its rules run these inside `RulesStore.transaction` (same database).
 */
import type { Db } from './database.js';

export interface StoredGroup {
  id: string;
  name: string;
  version: string;
  description: string | null;
  /** "manual", or the URL of the subscription that installed it. */
  source: string;
  installed_at: string;
}

export interface StoredSubscription {
  url: string;
  interval_sec: number;
  /** The group the last good bundle installed; null only between creation and the first good fetch. */
  group_id: string | null;
  etag: string | null;
  last_fetch_at: string | null;
  last_error: string | null;
  created_at: string;
}

export const MANUAL_SOURCE = 'manual';

export class GroupsStore {
  constructor(private readonly db: Db) {}

  listGroups(): StoredGroup[] {
    return this.db.prepare('SELECT id, name, version, description, source, installed_at FROM groups ORDER BY id').all() as StoredGroup[];
  }

  getGroup(id: string): StoredGroup | undefined {
    return this.db.prepare('SELECT id, name, version, description, source, installed_at FROM groups WHERE id = ?').get(id) as StoredGroup | undefined;
  }

  /** Inserts or replaces the row of `group.id`. */
  putGroup(group: StoredGroup): void {
    this.db.prepare(
      `INSERT OR REPLACE INTO groups (id, name, version, description, source, installed_at)
       VALUES (@id, @name, @version, @description, @source, @installed_at)`,
    ).run(group);
  }

  deleteGroup(id: string): boolean {
    return this.db.prepare('DELETE FROM groups WHERE id = ?').run(id).changes > 0;
  }

  listSubscriptions(): StoredSubscription[] {
    return this.db.prepare(
      'SELECT url, interval_sec, group_id, etag, last_fetch_at, last_error, created_at FROM subscriptions ORDER BY created_at, url',
    ).all() as StoredSubscription[];
  }

  getSubscription(url: string): StoredSubscription | undefined {
    return this.db.prepare(
      'SELECT url, interval_sec, group_id, etag, last_fetch_at, last_error, created_at FROM subscriptions WHERE url = ?',
    ).get(url) as StoredSubscription | undefined;
  }

  subscriptionOfGroup(groupId: string): StoredSubscription | undefined {
    return this.db.prepare(
      'SELECT url, interval_sec, group_id, etag, last_fetch_at, last_error, created_at FROM subscriptions WHERE group_id = ?',
    ).get(groupId) as StoredSubscription | undefined;
  }

  putSubscription(subscription: StoredSubscription): void {
    this.db.prepare(
      `INSERT OR REPLACE INTO subscriptions (url, interval_sec, group_id, etag, last_fetch_at, last_error, created_at)
       VALUES (@url, @interval_sec, @group_id, @etag, @last_fetch_at, @last_error, @created_at)`,
    ).run(subscription);
  }

  /** Records a poll that did not change the group (304, or a failure). */
  recordPoll(url: string, fetchedAt: string, error: string | null): void {
    this.db.prepare('UPDATE subscriptions SET last_fetch_at = ?, last_error = ? WHERE url = ?').run(fetchedAt, error, url);
  }

  /** Records a good fetch that changed nothing (new ETag, no error) of a subscription that still exists. */
  recordFetch(subscription: StoredSubscription): void {
    this.db.prepare('UPDATE subscriptions SET group_id = @group_id, etag = @etag, last_fetch_at = @last_fetch_at, last_error = NULL WHERE url = @url')
      .run(subscription);
  }

  deleteSubscription(url: string): boolean {
    return this.db.prepare('DELETE FROM subscriptions WHERE url = ?').run(url).changes > 0;
  }
}
