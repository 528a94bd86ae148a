import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestApp, draft } from '../helpers/app.js';
import type { BusEvent } from '../../lib/services/event-bus.js';

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return Date.now() - start;
}

test('engine loss: DOWN in /status, 503 + Retry-After on writes, engine_down, re-open with backoff, rules re-applied, engine_recovered', async (t) => {
  const { request, engine, app } = await startTestApp(t, {
    appOptions: { sampleIntervalMs: 0, engineCheckIntervalMs: 20, engineBackoffMs: [30, 60] },
  });
  const seen: BusEvent[] = [];
  app.netclamp.events.subscribe((event: BusEvent) => seen.push(event));
  const created = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'kept' }) });
  assert.equal(created.statusCode, 201);
  const id = Number((created.json() as { id: string }).id);
  assert.ok(engine.installed.has(id));

  engine.openFailures = 2; // the first two re-opens fail: backoff, then success
  engine.goDown();
  await until(() => seen.some((event) => event.name === 'engine_down'), 1000, 'engine_down');
  const status = (await request({ method: 'GET', url: '/api/v1/status' })).json() as Record<string, unknown>;
  assert.equal(status.wfp_session_state, 'DOWN');
  assert.equal(status.wfp_active, false);
  const refused = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'refused' }) });
  assert.equal(refused.statusCode, 503);
  assert.ok(Number(refused.headers['retry-after']) >= 1);

  await until(() => seen.some((event) => event.name === 'engine_recovered'), 5000, 'engine_recovered');
  assert.ok(engine.installed.has(id), 'the enabled rule is back in the engine');
  assert.equal(engine.opens, 2, 'the initial open and one successful re-open');
  assert.deepEqual(engine.calls.filter((call) => call === 'open' || call === 'close'), ['open', 'close', 'open', 'close', 'open', 'close', 'open']);
  const recovered = seen.find((event) => event.name === 'engine_recovered')!;
  assert.deepEqual(recovered.data, { state: 'OPEN', restarts: 1, rules_reapplied: 1 });
  assert.equal(seen.filter((event) => event.name === 'engine_down').length, 1, 'one engine_down per loss');
  const after = (await request({ method: 'GET', url: '/api/v1/status' })).json() as Record<string, unknown>;
  assert.equal(after.wfp_session_state, 'OPEN');
  assert.equal(after.bfe_restarts, 1);
  const accepted = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'accepted' }) });
  assert.equal(accepted.statusCode, 201);
});

test('an engine that never opened is not a loss: no events, no re-open attempts', async (t) => {
  const { FakeEngine } = await import('../helpers/fake-engine.js');
  const engine = new FakeEngine(); // DOWN from the start
  const { app } = await startTestApp(t, { engine, appOptions: { sampleIntervalMs: 0, engineCheckIntervalMs: 10, engineBackoffMs: [10] } });
  const seen: BusEvent[] = [];
  app.netclamp.events.subscribe((event: BusEvent) => seen.push(event));
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(seen.filter((event) => event.name.startsWith('engine_')), []);
  assert.deepEqual(engine.calls.filter((call) => call === 'open'), []);
});
