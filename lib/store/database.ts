/**
 * The service's SQLite database: WAL for concurrent readers, synchronous=FULL because a rule the API
 * acknowledged must survive a power cut. Schema changes are numbered migrations tracked in user_version.
 */
import Database from 'better-sqlite3';
import path from 'node:path';

export type Db = Database.Database;

export const DATABASE_FILE = 'netclamp.db';

/** Index i brings the schema from version i to i + 1. Append only; never edit a shipped migration. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE rules (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     name TEXT NOT NULL,
     app_path TEXT NOT NULL,
     action TEXT NOT NULL,
     direction TEXT NOT NULL,
     remote_address TEXT NOT NULL,
     remote_port INTEGER NOT NULL,
     protocol TEXT NOT NULL,
     rate_limit_down_bytes_per_sec INTEGER,
     rate_limit_up_bytes_per_sec INTEGER,
     limit_scope TEXT NOT NULL,
     match_mode TEXT NOT NULL,
     priority INTEGER NOT NULL,
     enabled INTEGER NOT NULL,
     revision INTEGER NOT NULL,
     sync_state TEXT NOT NULL,
     sync_error TEXT,
     group_id TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
  // Rule groups (bundles) and the subscriptions that keep them up to date; the bundle's rules live in
  // `rules` with group_id set, so the group row only records what was installed and from where.
  `CREATE TABLE groups (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     version TEXT NOT NULL,
     description TEXT,
     source TEXT NOT NULL,
     installed_at TEXT NOT NULL
   );
   CREATE TABLE subscriptions (
     url TEXT PRIMARY KEY,
     interval_sec INTEGER NOT NULL,
     group_id TEXT,
     etag TEXT,
     last_fetch_at TEXT,
     last_error TEXT,
     created_at TEXT NOT NULL
   );`,
  // Quotas: the draft, the bookkeeping, and the counting state (used_bytes is flushed every few seconds).
  `CREATE TABLE IF NOT EXISTS quotas (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     name TEXT NOT NULL,
     app_path TEXT NOT NULL,
     match_mode TEXT NOT NULL,
     direction TEXT NOT NULL,
     limit_bytes INTEGER NOT NULL,
     period TEXT NOT NULL,
     on_exceed TEXT NOT NULL,
     limit_rate_bytes_per_sec INTEGER,
     enabled INTEGER NOT NULL,
     revision INTEGER NOT NULL,
     group_id TEXT,
     used_bytes INTEGER NOT NULL DEFAULT 0,
     period_start TEXT,
     period_end TEXT,
     exceeded INTEGER NOT NULL DEFAULT 0,
     exceeded_at TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );`,
  // Licensing (lib/store/license-store.ts): credits bound here, credits transferred away (their last
  // binding number refuses their old bound token), and checkouts started here.
  `CREATE TABLE license_credits (
     credit_id TEXT PRIMARY KEY,
     units INTEGER NOT NULL,
     variant_id TEXT NOT NULL,
     token TEXT NOT NULL,
     binding INTEGER NOT NULL,
     activated_at TEXT NOT NULL
   );
   CREATE TABLE license_retired_credits (
     credit_id TEXT PRIMARY KEY,
     binding INTEGER NOT NULL,
     units INTEGER NOT NULL,
     unbound_token TEXT NOT NULL,
     transferred_at TEXT NOT NULL
   );
   CREATE TABLE billing_checkouts (
     nonce TEXT PRIMARY KEY,
     variant_id TEXT NOT NULL,
     created_at TEXT NOT NULL,
     credit_id TEXT
   );`,
  // Rule counters across restarts and engine re-opens (lib/services/rule-counters.ts): per rule, what it
  // had counted at the last flush. No foreign key: undoing a write re-inserts a rule row with INSERT OR
  // REPLACE, which must not take the counters along; the rules store deletes them with the rule.
  `CREATE TABLE rule_counters (
     rule_id INTEGER PRIMARY KEY,
     bytes_up INTEGER NOT NULL,
     bytes_down INTEGER NOT NULL,
     blocked_count INTEGER NOT NULL
   );`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function openDatabase(dataDir: string): Db {
  return openMigratedDatabase(path.join(dataDir, DATABASE_FILE), MIGRATIONS, 'NetClamp');
}

/**
 * Opens (creating) a SQLite file with the pragmas above and brings it to the last of `migrations`; the
 * license server keeps its own database this way. `product` names what to upgrade when the file is newer.
 */
export function openMigratedDatabase(file: string, migrations: readonly string[], product: string): Db {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  try {
    migrate(db, migrations, product);
  } catch (error) {
    db.close();
    throw error;
  }
  return db;
}

function migrate(db: Db, migrations: readonly string[], product: string): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > migrations.length) {
    throw new Error(`database schema version ${current} is newer than this ${product} (${migrations.length}); upgrade ${product}`);
  }
  for (let version = current; version < migrations.length; version++) {
    db.transaction(() => {
      db.exec(migrations[version]!);
      db.pragma(`user_version = ${version + 1}`);
    })();
  }
}
