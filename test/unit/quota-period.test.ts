/**
 * Quota period bounds in a DST zone. The computation runs in a child node process with TZ set (the zone is
 * fixed per process), fed UTC instants, and the bounds it returns are checked as UTC instants: a day
 * across the March change is 23 hours, across the October change 25 hours, and every bound is local midnight.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';
import { periodOver } from '../../lib/services/quota-period.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const moduleUrl = pathToFileURL(path.resolve(here, '../../lib/services/quota-period.js')).href;

interface Computed {
  at: string;
  period: string;
  start: string | null;
  end: string | null;
  offsetMinutes: number;
}

/** Bounds of `period` for each UTC instant, computed in `zone`. */
function boundsIn(zone: string, requests: Array<[string, string]>): Computed[] {
  const script = `
    const { periodBounds } = await import(${JSON.stringify(moduleUrl)});
    const requests = JSON.parse(process.argv[1]);
    const out = requests.map(([period, at]) => {
      const date = new Date(at);
      const bounds = periodBounds(period, date);
      return { at, period, start: bounds ? bounds.start.toISOString() : null, end: bounds ? bounds.end.toISOString() : null,
               offsetMinutes: date.getTimezoneOffset() };
    });
    process.stdout.write(JSON.stringify(out));
  `;
  const output = execFileSync(process.execPath, ['--input-type=module', '-e', script, JSON.stringify(requests)], {
    env: { ...process.env, TZ: zone }, encoding: 'utf8',
  });
  return JSON.parse(output) as Computed[];
}

const HOUR = 3_600_000;

test('Europe/Berlin: the child really computes in the zone (CET +1, CEST +2)', () => {
  const [winter, summer] = boundsIn('Europe/Berlin', [['DAILY', '2026-01-15T12:00:00Z'], ['DAILY', '2026-07-15T12:00:00Z']]);
  assert.equal(winter!.offsetMinutes, -60);
  assert.equal(summer!.offsetMinutes, -120);
  assert.deepEqual([winter!.start, winter!.end], ['2026-01-14T23:00:00.000Z', '2026-01-15T23:00:00.000Z']);
  assert.deepEqual([summer!.start, summer!.end], ['2026-07-14T22:00:00.000Z', '2026-07-15T22:00:00.000Z']);
});

test('Europe/Berlin, March change (29 March 2026, 02:00 -> 03:00): a 23-hour day, week and month end at local midnight', () => {
  const results = boundsIn('Europe/Berlin', [
    ['DAILY', '2026-03-29T10:00:00Z'],
    ['DAILY', '2026-03-29T00:30:00Z'], // 01:30 CET, before the jump
    ['DAILY', '2026-03-29T01:30:00Z'], // 03:30 CEST, after it
    ['DAILY', '2026-03-28T23:00:00Z'], // exactly local midnight: the new day starts here
    ['DAILY', '2026-03-28T22:59:59Z'], // the last second of the 28th
    ['WEEKLY', '2026-03-29T10:00:00Z'], // a Sunday: the week began Monday 23 March
    ['WEEKLY', '2026-03-30T10:00:00Z'], // the Monday after: a new week
    ['MONTHLY', '2026-03-29T10:00:00Z'],
  ]);
  const [day, beforeJump, afterJump, midnight, lastSecond, week, nextWeek, month] = results;
  assert.deepEqual([day!.start, day!.end], ['2026-03-28T23:00:00.000Z', '2026-03-29T22:00:00.000Z']);
  assert.equal(Date.parse(day!.end!) - Date.parse(day!.start!), 23 * HOUR);
  for (const sameDay of [beforeJump, afterJump, midnight]) assert.deepEqual([sameDay!.start, sameDay!.end], [day!.start, day!.end]);
  assert.deepEqual([lastSecond!.start, lastSecond!.end], ['2026-03-27T23:00:00.000Z', '2026-03-28T23:00:00.000Z']);
  assert.deepEqual([week!.start, week!.end], ['2026-03-22T23:00:00.000Z', '2026-03-29T22:00:00.000Z']);
  assert.equal(Date.parse(week!.end!) - Date.parse(week!.start!), 7 * 24 * HOUR - HOUR);
  assert.deepEqual([nextWeek!.start, nextWeek!.end], ['2026-03-29T22:00:00.000Z', '2026-04-05T22:00:00.000Z']);
  assert.deepEqual([month!.start, month!.end], ['2026-02-28T23:00:00.000Z', '2026-03-31T22:00:00.000Z']);
});

test('Europe/Berlin, October change (25 October 2026, 03:00 -> 02:00): a 25-hour day, both 02:30s on the same day', () => {
  const results = boundsIn('Europe/Berlin', [
    ['DAILY', '2026-10-25T12:00:00Z'],
    ['DAILY', '2026-10-25T00:30:00Z'], // 02:30 CEST, the first one
    ['DAILY', '2026-10-25T01:30:00Z'], // 02:30 CET, the repeat
    ['DAILY', '2026-10-25T22:59:59Z'], // 23:59:59 CET
    ['DAILY', '2026-10-25T23:00:00Z'], // local midnight of the 26th
    ['WEEKLY', '2026-10-25T12:00:00Z'],
    ['MONTHLY', '2026-10-25T12:00:00Z'],
    ['MONTHLY', '2026-12-31T22:59:59Z'], // 23:59:59 local, 31 Dec: still December
    ['NEVER', '2026-10-25T12:00:00Z'],
  ]);
  const [day, first, repeat, last, nextDay, week, month, december, never] = results;
  assert.deepEqual([day!.start, day!.end], ['2026-10-24T22:00:00.000Z', '2026-10-25T23:00:00.000Z']);
  assert.equal(Date.parse(day!.end!) - Date.parse(day!.start!), 25 * HOUR);
  for (const sameDay of [first, repeat, last]) assert.deepEqual([sameDay!.start, sameDay!.end], [day!.start, day!.end]);
  assert.deepEqual([nextDay!.start, nextDay!.end], ['2026-10-25T23:00:00.000Z', '2026-10-26T23:00:00.000Z']);
  assert.deepEqual([week!.start, week!.end], ['2026-10-18T22:00:00.000Z', '2026-10-25T23:00:00.000Z']);
  assert.deepEqual([month!.start, month!.end], ['2026-09-30T22:00:00.000Z', '2026-10-31T23:00:00.000Z']);
  assert.deepEqual([december!.start, december!.end], ['2026-11-30T23:00:00.000Z', '2026-12-31T23:00:00.000Z']);
  assert.deepEqual([never!.start, never!.end], [null, null]);
});

test('America/New_York: weeks start Monday across the year end and the March change', () => {
  const [yearEnd, march] = boundsIn('America/New_York', [
    ['WEEKLY', '2027-01-01T12:00:00Z'], // Friday 1 Jan 2027: the week began Monday 28 Dec 2026 (EST, -5)
    ['DAILY', '2026-03-08T12:00:00Z'], // the US change, 8 March 2026
  ]);
  assert.deepEqual([yearEnd!.start, yearEnd!.end], ['2026-12-28T05:00:00.000Z', '2027-01-04T05:00:00.000Z']);
  assert.deepEqual([march!.start, march!.end], ['2026-03-08T05:00:00.000Z', '2026-03-09T04:00:00.000Z']);
});

test('periodOver: a period is over from its end on; NEVER never is', () => {
  assert.equal(periodOver('2026-03-29T22:00:00.000Z', new Date('2026-03-29T21:59:59.999Z')), false);
  assert.equal(periodOver('2026-03-29T22:00:00.000Z', new Date('2026-03-29T22:00:00.000Z')), true);
  assert.equal(periodOver(null, new Date('2100-01-01T00:00:00Z')), false);
});
