/**
 * While the supervisor re-attaches, /status says RECOVERING (not DOWN), and its detail says what was lost,
 * not what the recovery did to the engine ("engine closed").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeEngine } from '../helpers/fake-engine.js';
import { assertProblem, draft, startTestApp, type TestApp } from '../helpers/app.js';
import type { BusEvent } from '../../lib/services/event-bus.js';

async function until(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A fake whose DOWN detail behaves like the native engine's: the loss first, then "engine closed". */
function nativeLikeDetails(engine: FakeEngine): { lose(detail: string): void } {
  let downDetail = 'engine not open';
  engine.status = () => {
    const status = FakeEngine.prototype.status.call(engine);
    return status.state === 'OPEN' ? status : { ...status, detail: downDetail };
  };
  const close = engine.close.bind(engine);
  engine.close = async () => {
    downDetail = 'engine closed';
    await close();
  };
  return {
    lose(detail) {
      downDetail = detail;
      engine.goDown();
    },
  };
}

async function sessionState(app: TestApp): Promise<string> {
  return ((await app.request({ method: 'GET', url: '/api/v1/status' })).json() as { wfp_session_state: string }).wfp_session_state;
}

test('engine loss: RECOVERING while re-attaching and re-applying, with the loss as the detail; OPEN after', async (t) => {
  const app = await startTestApp(t, { appOptions: { sampleIntervalMs: 0, engineCheckIntervalMs: 20, engineBackoffMs: [10] } });
  const { engine } = app;
  const seen: BusEvent[] = [];
  app.app.netclamp.events.subscribe((event: BusEvent) => seen.push(event));
  const engineLoss = nativeLikeDetails(engine);
  let release!: () => void;
  const gate = new Promise<void>((resolve) => { release = resolve; });
  const open = engine.open.bind(engine);
  engine.open = async () => {
    await gate; // the re-open takes as long as the test wants
    await open();
  };

  engineLoss.lose('program nc_egress no longer attached to the cgroup root');
  await until(() => engine.calls.includes('close'), 2000, 'the re-attach attempt');
  assert.equal(await sessionState(app), 'RECOVERING');
  const during = app.app.netclamp.supervisor.status();
  assert.equal(during.state, 'RECOVERING');
  assert.match(String(during.detail), /nc_egress no longer attached/);
  assert.doesNotMatch(String(during.detail), /engine closed/);
  // A write meanwhile is refused with the same account, not the engine's bare "closed".
  const refused = assertProblem(await app.request({ method: 'POST', url: '/api/v1/rules', payload: draft() }), 503);
  assert.match(String(refused.detail), /RECOVERING.*nc_egress no longer attached/);

  release();
  await until(() => seen.some((event) => event.name === 'engine_recovered'), 2000, 'engine_recovered');
  assert.equal(await sessionState(app), 'OPEN');
  assert.equal(app.app.netclamp.supervisor.status().detail, null);
});

test('engine loss: DOWN between attempts, naming the loss and why the last re-attach failed; a shutdown does not wait out the backoff', async (t) => {
  const app = await startTestApp(t, { appOptions: { sampleIntervalMs: 0, engineCheckIntervalMs: 20, engineBackoffMs: [10, 600_000] } });
  const { engine } = app;
  const engineLoss = nativeLikeDetails(engine);
  engine.openFailures = 1;
  engineLoss.lose('program nc_egress no longer attached to the cgroup root');
  await until(() => engine.calls.filter((call) => call === 'open').length === 2, 2000, 'the failed re-open');
  await until(() => !app.app.netclamp.supervisor.status().state.startsWith('RECOVERING'), 2000, 'the attempt to end');
  assert.equal(await sessionState(app), 'DOWN');
  const between = app.app.netclamp.supervisor.status();
  assert.match(String(between.detail), /nc_egress no longer attached/);
  assert.match(String(between.detail), /fake engine cannot attach yet/);
  const started = Date.now();
  await app.close();
  assert.ok(Date.now() - started < 60_000, 'close ended the 10-minute backoff');
});
