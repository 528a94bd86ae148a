/**
 * service.log: expected server-side answers (503 engine down, 502/504 upstream) are one warn line without a
 * stack; a real 500 is an error with the stack its detail points to.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { assertProblem, draft, startTestApp } from '../helpers/app.js';

function capturedLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino({ level: 'info' }, sink), lines };
}

const WARN = 40;
const ERROR = 50;

test('a 503 while the engine is down is logged at warn with its detail and no stack', async (t) => {
  const { logger, lines } = capturedLogger();
  const { request, engine } = await startTestApp(t, { appOptions: { logger, engineCheckIntervalMs: 60_000 } });
  engine.goDown();
  lines.length = 0;
  const problem = assertProblem(await request({ method: 'POST', url: '/api/v1/rules', payload: draft() }), 503);
  const logged = lines.filter((line) => line.status === 503);
  assert.equal(logged.length, 1, JSON.stringify(lines));
  assert.equal(logged[0]!.level, WARN);
  assert.equal(logged[0]!.detail, problem.detail);
  assert.ok(!JSON.stringify(lines).includes('"stack"'), 'no stack for an expected 503');
  assert.ok(!lines.some((line) => Number(line.level) >= ERROR), 'nothing at error level');
});

test('an unexpected failure (500) is logged at error level with its stack', async (t) => {
  const { logger, lines } = capturedLogger();
  const { request, engine } = await startTestApp(t, { appOptions: { logger } });
  engine.installedRules = async () => { throw new TypeError('reconcile exploded'); };
  assertProblem(await request({ method: 'POST', url: '/api/v1/rules/reconcile' }), 500);
  const logged = lines.find((line) => Number(line.level) === ERROR);
  assert.ok(logged, JSON.stringify(lines));
  const err = logged.err as { message: string; stack: string };
  assert.equal(err.message, 'reconcile exploded');
  assert.match(err.stack, /TypeError: reconcile exploded\n\s+at /);
});
