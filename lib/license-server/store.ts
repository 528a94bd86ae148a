/**
 * The license server's SQLite: checkouts (a nonce reserved for a hwid and a pack, and the token minted
 * for it), credits (who holds each one now, at which binding number, and the last token issued for it) and
 * processed orders (one row per provider order id, so a replayed webhook mints nothing).
 */
import { openMigratedDatabase, type Db } from '../store/database.js';

/** Index i brings the schema from version i to i + 1. Append only. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE checkouts (
     nonce TEXT PRIMARY KEY,
     variant_id TEXT NOT NULL,
     hwid TEXT NOT NULL,
     checkout_url TEXT,
     credit_id TEXT,
     token TEXT,
     created_at TEXT NOT NULL
   );
   CREATE TABLE credits (
     credit_id TEXT PRIMARY KEY,
     units INTEGER NOT NULL,
     variant_id TEXT NOT NULL,
     order_id TEXT NOT NULL,
     hwid TEXT,
     binding INTEGER NOT NULL,
     unbound_from TEXT,
     token TEXT NOT NULL,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL
   );
   CREATE TABLE orders (
     order_id TEXT PRIMARY KEY,
     nonce TEXT,
     variant_id TEXT,
     outcome TEXT NOT NULL,
     credit_id TEXT,
     detail TEXT,
     received_at TEXT NOT NULL
   );`,
];

export interface CheckoutRow {
  nonce: string;
  variant_id: string;
  hwid: string;
  /** Null while the provider call is in flight. */
  checkout_url: string | null;
  credit_id: string | null;
  /** The bound token minted for this checkout. */
  token: string | null;
  created_at: string;
}

export interface CreditRow {
  credit_id: string;
  units: number;
  variant_id: string;
  order_id: string;
  /** Null = unbound. */
  hwid: string | null;
  binding: number;
  /** The hwid of the last unbind, so a retried unbind from that machine gets the same answer. */
  unbound_from: string | null;
  /** The last token issued for the credit (bound or unbound). */
  token: string;
  created_at: string;
  updated_at: string;
}

/** `minted`: a credit was made; `unmatched`: paid but no credit (unknown nonce or variant, checkout already paid). */
export type OrderOutcome = 'minted' | 'unmatched';

export interface OrderRow {
  order_id: string;
  nonce: string | null;
  variant_id: string | null;
  outcome: OrderOutcome;
  credit_id: string | null;
  detail: string | null;
  received_at: string;
}

export class LicenseServerStore {
  private readonly db: Db;

  constructor(file: string) {
    this.db = openMigratedDatabase(file, MIGRATIONS, 'NetClamp license server');
  }

  close(): void {
    this.db.close();
  }

  /** Runs `work` atomically; better-sqlite3 is synchronous, so no other request interleaves either. */
  transaction<T>(work: () => T): T {
    return this.db.transaction(work)();
  }

  getCheckout(nonce: string): CheckoutRow | undefined {
    return this.db.prepare('SELECT * FROM checkouts WHERE nonce = ?').get(nonce) as CheckoutRow | undefined;
  }

  /** False when the nonce is taken. */
  reserveCheckout(nonce: string, variantId: string, hwid: string, now: string): boolean {
    const result = this.db.prepare('INSERT OR IGNORE INTO checkouts (nonce, variant_id, hwid, created_at) VALUES (?, ?, ?, ?)')
      .run(nonce, variantId, hwid, now);
    return result.changes === 1;
  }

  setCheckoutUrl(nonce: string, url: string): void {
    this.db.prepare('UPDATE checkouts SET checkout_url = ? WHERE nonce = ?').run(url, nonce);
  }

  /** Frees a nonce whose provider call failed, so the caller may retry with it. */
  dropUnstartedCheckout(nonce: string): void {
    this.db.prepare('DELETE FROM checkouts WHERE nonce = ? AND checkout_url IS NULL AND credit_id IS NULL').run(nonce);
  }

  setCheckoutMinted(nonce: string, creditId: string, token: string): void {
    this.db.prepare('UPDATE checkouts SET credit_id = ?, token = ? WHERE nonce = ?').run(creditId, token, nonce);
  }

  getOrder(orderId: string): OrderRow | undefined {
    return this.db.prepare('SELECT * FROM orders WHERE order_id = ?').get(orderId) as OrderRow | undefined;
  }

  insertOrder(order: OrderRow): void {
    this.db.prepare(`INSERT INTO orders (order_id, nonce, variant_id, outcome, credit_id, detail, received_at)
      VALUES (@order_id, @nonce, @variant_id, @outcome, @credit_id, @detail, @received_at)`).run(order);
  }

  countOrders(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM orders').get() as { n: number }).n;
  }

  getCredit(creditId: string): CreditRow | undefined {
    return this.db.prepare('SELECT * FROM credits WHERE credit_id = ?').get(creditId) as CreditRow | undefined;
  }

  countCredits(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM credits').get() as { n: number }).n;
  }

  insertCredit(credit: CreditRow): void {
    this.db.prepare(`INSERT INTO credits (credit_id, units, variant_id, order_id, hwid, binding, unbound_from, token, created_at, updated_at)
      VALUES (@credit_id, @units, @variant_id, @order_id, @hwid, @binding, @unbound_from, @token, @created_at, @updated_at)`).run(credit);
  }

  updateCreditHolder(creditId: string, change: { hwid: string | null; binding: number; unbound_from: string | null; token: string; updated_at: string }): void {
    this.db.prepare(`UPDATE credits SET hwid = @hwid, binding = @binding, unbound_from = @unbound_from, token = @token,
      updated_at = @updated_at WHERE credit_id = @credit_id`).run({ ...change, credit_id: creditId });
  }
}
