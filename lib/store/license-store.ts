/**
 * Licensing state in SQLite (schema: database.ts). Credits bound to this machine keep their bound token
 * verbatim (it is the proof, re-verified at every start); a transferred credit leaves a retired row with
 * its last binding number, so its old bound token is refused from then on, and with the unbound token the
 * transfer gave out; checkouts started here remember their nonce until the credit is minted.
 */
import type { Db } from './database.js';

export interface StoredCredit {
  credit_id: string;
  units: number;
  variant_id: string;
  token: string;
  binding: number;
  activated_at: string;
}

export interface RetiredCredit {
  credit_id: string;
  binding: number;
  units: number;
  unbound_token: string;
  transferred_at: string;
}

export interface StoredCheckout {
  nonce: string;
  variant_id: string;
  created_at: string;
  /** Set once the checkout's credit was minted and activated here. */
  credit_id: string | null;
}

export class LicenseStore {
  constructor(private readonly db: Db) {}

  transaction<T>(work: () => T): T {
    return this.db.transaction(work)();
  }

  listCredits(): StoredCredit[] {
    return this.db.prepare('SELECT * FROM license_credits ORDER BY activated_at, credit_id').all() as StoredCredit[];
  }

  getCredit(creditId: string): StoredCredit | undefined {
    return this.db.prepare('SELECT * FROM license_credits WHERE credit_id = ?').get(creditId) as StoredCredit | undefined;
  }

  putCredit(credit: StoredCredit): void {
    this.db.prepare(
      `INSERT INTO license_credits (credit_id, units, variant_id, token, binding, activated_at)
       VALUES (@credit_id, @units, @variant_id, @token, @binding, @activated_at)
       ON CONFLICT(credit_id) DO UPDATE SET units = excluded.units, variant_id = excluded.variant_id,
         token = excluded.token, binding = excluded.binding, activated_at = excluded.activated_at`,
    ).run(credit);
  }

  deleteCredit(creditId: string): void {
    this.db.prepare('DELETE FROM license_credits WHERE credit_id = ?').run(creditId);
  }

  listRetired(): RetiredCredit[] {
    return this.db.prepare('SELECT * FROM license_retired_credits ORDER BY transferred_at, credit_id').all() as RetiredCredit[];
  }

  getRetired(creditId: string): RetiredCredit | undefined {
    return this.db.prepare('SELECT * FROM license_retired_credits WHERE credit_id = ?').get(creditId) as RetiredCredit | undefined;
  }

  putRetired(retired: RetiredCredit): void {
    this.db.prepare(
      `INSERT INTO license_retired_credits (credit_id, binding, units, unbound_token, transferred_at)
       VALUES (@credit_id, @binding, @units, @unbound_token, @transferred_at)
       ON CONFLICT(credit_id) DO UPDATE SET binding = excluded.binding, units = excluded.units,
         unbound_token = excluded.unbound_token, transferred_at = excluded.transferred_at`,
    ).run(retired);
  }

  deleteRetired(creditId: string): void {
    this.db.prepare('DELETE FROM license_retired_credits WHERE credit_id = ?').run(creditId);
  }

  getCheckout(nonce: string): StoredCheckout | undefined {
    return this.db.prepare('SELECT * FROM billing_checkouts WHERE nonce = ?').get(nonce) as StoredCheckout | undefined;
  }

  insertCheckout(checkout: StoredCheckout): void {
    this.db.prepare(
      'INSERT INTO billing_checkouts (nonce, variant_id, created_at, credit_id) VALUES (@nonce, @variant_id, @created_at, @credit_id)',
    ).run(checkout);
  }

  deleteCheckout(nonce: string): void {
    this.db.prepare('DELETE FROM billing_checkouts WHERE nonce = ?').run(nonce);
  }

  completeCheckout(nonce: string, creditId: string): void {
    this.db.prepare('UPDATE billing_checkouts SET credit_id = ? WHERE nonce = ?').run(creditId, nonce);
  }

  /**
   * Clamp slots in use (contract: enabled LIMIT rules + enabled quotas). Counted in SQL from the rules
   * and quotas tables so that the check sees exactly what the write it guards is about to change.
   */
  clampSlotsUsed(): number {
    const row = this.db.prepare(
      `SELECT (SELECT COUNT(*) FROM rules WHERE enabled = 1 AND action = 'LIMIT')
            + (SELECT COUNT(*) FROM quotas WHERE enabled = 1) AS used`,
    ).get() as { used: number };
    return row.used;
  }
}
