import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestApp } from '../helpers/app.js';
import { ThroughputRing } from '../../lib/services/throughput-ring.js';

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

test('ring: differences of cumulative totals per second, zeros for unseen seconds, counters restarting', () => {
  const ring = new ThroughputRing(10);
  ring.record(100, 1000, T0); // baseline only
  ring.record(150, 1300, T0 + 1000);
  ring.record(150, 1300, T0 + 2000);
  ring.record(40, 10, T0 + 4000); // went backwards: engine re-opened, 40/10 since then
  const window = ring.window(6, T0 + 4500);
  assert.deepEqual(window.map((s) => [s.up_bytes, s.down_bytes]), [[0, 0], [0, 0], [50, 300], [0, 0], [0, 0], [40, 10]]);
  assert.equal(window[0]!.ts, new Date(T0 - 1000).toISOString());
  assert.equal(window[5]!.ts, new Date(T0 + 4000).toISOString());
  // After wrapping, an old slot is not mistaken for a new second.
  assert.deepEqual(ring.window(3, T0 + 12_000).map((s) => s.up_bytes), [0, 0, 0]);
});

test('GET /throughput: exactly N samples, oldest first, default 60, from the sampler', async (t) => {
  let now = T0 + 250;
  const { request, engine, app } = await startTestApp(t, { appOptions: { sampleIntervalMs: 0, now: () => now } });
  const activity = app.netclamp.activity;
  await activity.sample();
  for (let second = 1; second <= 3; second++) {
    now += 1000;
    engine.unmatched.up += 1000 * second;
    engine.unmatched.down += 7;
    await activity.sample();
  }
  const response = await request({ method: 'GET', url: '/api/v1/throughput?window=5' });
  assert.equal(response.statusCode, 200);
  const body = response.json() as { window: number; interval_ms: number; samples: Array<{ ts: string; up_bytes: number; down_bytes: number }> };
  assert.equal(body.window, 5);
  assert.equal(body.interval_ms, 1000);
  assert.deepEqual(body.samples.map((s) => s.up_bytes), [0, 0, 1000, 2000, 3000]);
  assert.deepEqual(body.samples.map((s) => s.down_bytes), [0, 0, 7, 7, 7]);
  assert.equal(body.samples[4]!.ts, new Date(T0 + 3000).toISOString());

  const byDefault = (await request({ method: 'GET', url: '/api/v1/throughput' })).json() as { window: number; samples: unknown[] };
  assert.equal(byDefault.window, 60);
  assert.equal(byDefault.samples.length, 60);
  const widest = (await request({ method: 'GET', url: '/api/v1/throughput?window=3600' })).json() as { samples: unknown[] };
  assert.equal(widest.samples.length, 3600);
});

test('GET /throughput: a window outside 1..3600 is a 400 naming window', async (t) => {
  const { request } = await startTestApp(t, { appOptions: { sampleIntervalMs: 0 } });
  for (const bad of ['0', '3601', 'abc', '1.5', '-1', '']) {
    const response = await request({ method: 'GET', url: `/api/v1/throughput?window=${bad}` });
    assert.equal(response.statusCode, 400, `window=${bad}`);
    assert.match((response.json() as { detail: string }).detail, /window/);
  }
});

test('GET /throughput: seconds while the engine is down are zeros, and no spike when it returns', async (t) => {
  let now = T0;
  const { request, engine, app } = await startTestApp(t, {
    appOptions: { sampleIntervalMs: 0, now: () => now, engineCheckIntervalMs: 60_000 },
  });
  const activity = app.netclamp.activity;
  engine.unmatched.up = 5000;
  await activity.sample();
  now += 1000;
  engine.unmatched.up = 6000;
  await activity.sample();
  engine.goDown();
  now += 1000;
  await activity.sample();
  await engine.open();
  engine.unmatched.up = 9_000_000; // a fresh engine's counters, unrelated to the old baseline
  now += 1000;
  await activity.sample();
  now += 1000;
  engine.unmatched.up += 10;
  await activity.sample();
  const body = (await request({ method: 'GET', url: '/api/v1/throughput?window=4' })).json() as { samples: Array<{ up_bytes: number }> };
  assert.deepEqual(body.samples.map((s) => s.up_bytes), [1000, 0, 0, 10]);
});
