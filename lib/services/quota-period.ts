/**
 * Quota periods in the process's local time zone. Bounds are computed with calendar arithmetic on local
 * dates (the Date constructor normalises day/month overflow and resolves the local offset itself), never
 * by adding fixed milliseconds: a day across a DST change is 23 or 25 hours long.
 */

export type QuotaPeriod = 'DAILY' | 'WEEKLY' | 'MONTHLY' | 'NEVER';

export interface PeriodBounds {
  start: Date;
  end: Date;
}

/** Local midnight at the start of `year-month-day` (day and month may overflow; Date normalises them). */
function localMidnight(year: number, monthIndex: number, day: number): Date {
  return new Date(year, monthIndex, day, 0, 0, 0, 0);
}

/**
 * The period that contains `at`: [start, end) in local time. NEVER has no bounds (null).
 * Weeks start on Monday, months on the 1st.
 */
export function periodBounds(period: QuotaPeriod, at: Date): PeriodBounds | null {
  const year = at.getFullYear();
  const month = at.getMonth();
  const day = at.getDate();
  switch (period) {
    case 'DAILY':
      return { start: localMidnight(year, month, day), end: localMidnight(year, month, day + 1) };
    case 'WEEKLY': {
      const daysSinceMonday = (at.getDay() + 6) % 7; // getDay(): 0 = Sunday
      return {
        start: localMidnight(year, month, day - daysSinceMonday),
        end: localMidnight(year, month, day - daysSinceMonday + 7),
      };
    }
    case 'MONTHLY':
      return { start: localMidnight(year, month, 1), end: localMidnight(year, month + 1, 1) };
    case 'NEVER':
      return null;
  }
}

/** ISO 8601 UTC strings of the period containing `at`, as a stored quota carries them. */
export function periodStrings(period: QuotaPeriod, at: Date): { period_start: string | null; period_end: string | null } {
  const bounds = periodBounds(period, at);
  return bounds === null
    ? { period_start: null, period_end: null }
    : { period_start: bounds.start.toISOString(), period_end: bounds.end.toISOString() };
}

/** True when a period that ends at `periodEnd` (ISO, or null for NEVER) is over at `now`. */
export function periodOver(periodEnd: string | null, now: Date): boolean {
  return periodEnd !== null && now.getTime() >= Date.parse(periodEnd);
}
