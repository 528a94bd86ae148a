/**
 * Reading a rate change off a receiver's byte samples (bench/responsiveness.ts explains the figures).
 * Points are in time order; t is seconds since the change was requested (negative before it).
 */
import type { ByteSample } from './rate-probe.js';

const TRAILING_WINDOW_S = 0.1;
export const SETTLE_TOLERANCE = 0.1;
const REACTION_HOLD_S = 0.2;
const SETTLE_MIN_HOLD_S = 1;

export interface Point {
  t: number;
  bytes: number;
}

export function toPoints(samples: readonly ByteSample[], origin: bigint): Point[] {
  return samples.map((sample) => ({ t: Number(sample.ns - origin) / 1e9, bytes: sample.bytes }));
}

/** The sample nearest at or after time `t` (points are in time order). */
function indexAtOrAfter(points: readonly Point[], t: number): number {
  let low = 0;
  let high = points.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (points[middle]!.t < t) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** Average rate between the samples nearest `from` and `to`. */
export function rateBetween(points: readonly Point[], from: number, to: number): number | null {
  const a = points[indexAtOrAfter(points, from)];
  const b = points[Math.min(indexAtOrAfter(points, to), points.length - 1)];
  if (!a || !b || b.t <= a.t) return null;
  return (b.bytes - a.bytes) / (b.t - a.t);
}

function trailingRate(points: readonly Point[], i: number): number | null {
  const j = indexAtOrAfter(points, points[i]!.t - TRAILING_WINDOW_S);
  return j >= i ? null : (points[i]!.bytes - points[j]!.bytes) / (points[i]!.t - points[j]!.t);
}

/** First time from which the 100 ms trailing rate stays past the midpoint of `from` and `to` for 200 ms. */
export function reactionSeconds(points: readonly Point[], from: number, to: number): number | null {
  const midpoint = (from + to) / 2;
  const past = (rate: number | null): boolean => rate !== null && (to > from ? rate >= midpoint : rate <= midpoint);
  for (let i = indexAtOrAfter(points, 0); i < points.length; i++) {
    if (!past(trailingRate(points, i))) continue;
    let held = true;
    for (let k = i + 1; k < points.length && points[k]!.t <= points[i]!.t + REACTION_HOLD_S && held; k++) held = past(trailingRate(points, k));
    if (held) return points[i]!.t;
  }
  return null;
}

/**
 * Earliest time from which bytes follow `limit` to the last sample within `burst` + 10% of limit x elapsed,
 * with at least 1 s of samples left to check; null if never.
 */
export function settleSeconds(points: readonly Point[], limit: number, burst: number): number | null {
  const end = points[points.length - 1]?.t ?? 0;
  for (let i = indexAtOrAfter(points, 0); i < points.length && end - points[i]!.t >= SETTLE_MIN_HOLD_S; i++) {
    const start = points[i]!;
    let follows = true;
    for (let j = i + 1; j < points.length && follows; j++) {
      const elapsed = points[j]!.t - start.t;
      follows = Math.abs(points[j]!.bytes - start.bytes - limit * elapsed) <= burst + SETTLE_TOLERANCE * limit * elapsed;
    }
    if (follows) return start.t;
  }
  return null;
}

/** Longest time after 0 in which the byte count did not grow. */
export function longestPauseSeconds(points: readonly Point[]): number {
  let longest = 0;
  let since: Point | null = null;
  for (let i = indexAtOrAfter(points, 0); i < points.length; i++) {
    const point = points[i]!;
    if (since === null || point.bytes > since.bytes) since = point;
    else longest = Math.max(longest, point.t - since.t);
  }
  return longest;
}

/**
 * Largest excess (bytes; < 0 = always under) of a 1 s window starting at or after 0 over what the limit
 * allowed in it: `from` until `oldLimitUntil`, `to` after.
 */
export function worstSecondExcess(points: readonly Point[], from: number, to: number, oldLimitUntil: number): number {
  let worst = -Infinity;
  for (let i = indexAtOrAfter(points, 0); i < points.length; i++) {
    const start = points[i]!;
    const endIndex = indexAtOrAfter(points, start.t + 1);
    if (endIndex >= points.length) break;
    const end = points[endIndex]!;
    const oldPart = Math.max(0, Math.min(end.t, oldLimitUntil) - start.t);
    const allowed = oldPart * from + (end.t - start.t - oldPart) * to;
    worst = Math.max(worst, end.bytes - start.bytes - allowed);
  }
  return worst;
}
