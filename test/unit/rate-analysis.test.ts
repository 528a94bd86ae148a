import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  longestPauseSeconds, reactionSeconds, settleSeconds, worstSecondExcess, type Point,
} from '../../bench/rate-analysis.js';

/** Receiver samples every 10 ms from -1 s to +3 s of a transfer whose rate (bytes/s) is `rateAt(t)`. */
function series(rateAt: (t: number) => number): Point[] {
  const points: Point[] = [];
  let bytes = 0;
  for (let step = -100; step <= 300; step++) {
    const t = step / 100;
    points.push({ t, bytes: Math.round(bytes) });
    bytes += rateAt(t) * 0.01;
  }
  return points;
}

const MB = 1_000_000;

test('a raise that applies 50 ms after the request: reaction at the trailing window, settled at once, no pause, never above', () => {
  const points = series((t) => (t < 0.05 ? 1 * MB : 4 * MB));
  const reaction = reactionSeconds(points, 1 * MB, 4 * MB)!;
  assert.ok(reaction > 0.09 && reaction < 0.12, `reaction ${reaction}`);
  // 150 kB short at 50 ms is inside one burst (160 kB), so the transfer follows the new limit from 0.
  assert.equal(settleSeconds(points, 4 * MB, 160_000), 0);
  assert.ok(longestPauseSeconds(points) < 0.011);
  assert.ok(worstSecondExcess(points, 1 * MB, 4 * MB, 0) < 1000); // exact rate: rounding only
});

test('a lower that stops the transfer for 1.2 s: it settles and pauses for 1.2 s, and the stall is not counted as excess', () => {
  const points = series((t) => (t < 0 ? 8 * MB : t < 1.2 ? 0 : 2 * MB));
  assert.ok(reactionSeconds(points, 8 * MB, 2 * MB)! < 0.05);
  const settle = settleSeconds(points, 2 * MB, 80_000)!;
  assert.ok(settle > 1.1 && settle < 1.25, `settle ${settle}`);
  const pause = longestPauseSeconds(points);
  assert.ok(pause > 1.15 && pause < 1.25, `pause ${pause}`);
  assert.ok(worstSecondExcess(points, 8 * MB, 2 * MB, 0.01) < 1000);
});

test('an overshoot after a raise is the worst second; a transfer that never follows the limit does not settle', () => {
  const points = series((t) => (t < 0 ? 2 * MB : t < 0.3 ? 16 * MB : 8 * MB));
  const excess = worstSecondExcess(points, 2 * MB, 8 * MB, 0);
  assert.ok(Math.abs(excess - 0.3 * 8 * MB) < 0.05 * MB, `excess ${excess}`);
  assert.equal(settleSeconds(series(() => 3 * MB), 2 * MB, 80_000), null);
});

test('the old limit counts until the change was acknowledged when lowering', () => {
  const points = series((t) => (t < 0.2 ? 8 * MB : 2 * MB));
  const acknowledgedLate = worstSecondExcess(points, 8 * MB, 2 * MB, 0.2);
  const acknowledgedAtOnce = worstSecondExcess(points, 8 * MB, 2 * MB, 0);
  assert.ok(Math.abs(acknowledgedLate) < 0.05 * MB, `late ${acknowledgedLate}`);
  assert.ok(Math.abs(acknowledgedAtOnce - 0.2 * 6 * MB) < 0.05 * MB, `at once ${acknowledgedAtOnce}`);
});
