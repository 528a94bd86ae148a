import test from 'node:test';
import assert from 'node:assert/strict';
import { SharedReading } from '../../lib/services/shared-reading.js';

/** A read that stays open until the test releases it, counting how many were started. */
function controlledRead() {
  const pending: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  let started = 0;
  const read = () => new Promise<void>((resolve, reject) => {
    started++;
    pending.push({ resolve, reject });
  });
  return { read, started: () => started, release: () => pending.shift()!.resolve(), fail: (error: Error) => pending.shift()!.reject(error) };
}

test('concurrent fresh() calls share one reading; a later one within maxAge reuses it', async () => {
  let clock = 0;
  const kernel = controlledRead();
  const reading = new SharedReading(kernel.read, 250, () => clock);
  const first = reading.fresh();
  const second = reading.fresh();
  assert.equal(kernel.started(), 1);
  kernel.release();
  await Promise.all([first, second]);
  clock = 200;
  await reading.fresh();
  assert.equal(kernel.started(), 1, 'a reading 200 ms old is fresh enough');
  clock = 300;
  const third = reading.fresh();
  assert.equal(kernel.started(), 2, 'a reading 300 ms old is not');
  kernel.release();
  await third;
});

test('next() waits for a reading that starts after the call, and readings never overlap', async () => {
  const kernel = controlledRead();
  const reading = new SharedReading(kernel.read, 1000, () => 0);
  const running = reading.fresh();
  const after = reading.next();
  const alsoAfter = reading.next();
  assert.equal(kernel.started(), 1, 'the second reading starts only when the first has finished');
  kernel.release();
  await running;
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(kernel.started(), 2, 'both next() callers share one new reading');
  kernel.release();
  await Promise.all([after, alsoAfter]);
});

test('a failed reading reaches its callers, and the next call reads again', async () => {
  const kernel = controlledRead();
  const reading = new SharedReading(kernel.read, 1000, () => 0);
  const failing = reading.fresh();
  kernel.fail(new Error('engine gone'));
  await assert.rejects(failing, /engine gone/);
  const retry = reading.fresh();
  assert.equal(kernel.started(), 2, 'a failed reading is not reused, not even by fresh()');
  kernel.release();
  await retry;
});

test('maxAge 0 reuses nothing: every fresh() is a new reading', async () => {
  let reads = 0;
  const reading = new SharedReading(async () => { reads++; }, 0, () => 0);
  await reading.fresh();
  await reading.fresh();
  assert.equal(reads, 2);
});
