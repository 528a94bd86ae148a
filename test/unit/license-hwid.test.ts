import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hwidOf, machineHwid, readLinuxHwidInputs } from '../../lib/license/hwid.js';
import { TokenBucket } from '../../lib/http/rate-limit.js';

test('HWID: 64 hex, stable for the same inputs, different for other inputs or another test seed', () => {
  const inputs = [{ name: 'machine-id', value: 'abc' }, { name: 'dmi-product-uuid', value: 'def' }];
  const hwid = hwidOf(inputs);
  assert.match(hwid.hwid, /^[0-9a-f]{64}$/);
  assert.deepEqual(hwid.inputs, ['machine-id', 'dmi-product-uuid']);
  assert.equal(hwidOf(inputs.map((input) => ({ ...input }))).hwid, hwid.hwid);
  assert.notEqual(hwidOf([inputs[0]!, { name: 'dmi-product-uuid', value: 'xyz' }]).hwid, hwid.hwid);
  assert.notEqual(hwidOf(inputs, 'seed').hwid, hwid.hwid);
  assert.notEqual(hwidOf(inputs, 'seed').hwid, hwidOf(inputs, 'other seed').hwid);
  // An identifier moved between names is another machine, not the same one.
  assert.notEqual(hwidOf([{ name: 'machine-id', value: '' }, { name: 'dmi-product-uuid', value: 'abc' }]).hwid,
    hwidOf([{ name: 'machine-id', value: 'abc' }, { name: 'dmi-product-uuid', value: '' }]).hwid);
});

test('HWID: unreadable identifiers still give a stable hash, and are not listed as inputs', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netclamp-hwid-'));
  try {
    fs.writeFileSync(path.join(dir, 'machine-id'), 'ABCDEF\n');
    const sources = [
      { name: 'machine-id', paths: [path.join(dir, 'missing'), path.join(dir, 'machine-id')] },
      { name: 'dmi-product-uuid', paths: [path.join(dir, 'absent')] },
    ];
    const read = readLinuxHwidInputs(sources);
    assert.deepEqual(read, [{ name: 'machine-id', value: 'abcdef' }, { name: 'dmi-product-uuid', value: '' }]);
    assert.deepEqual(hwidOf(read).inputs, ['machine-id']);
    assert.equal(hwidOf(readLinuxHwidInputs(sources)).hwid, hwidOf(read).hwid);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // Windows without the addon's reader (or a failing one): empty inputs, still a hash, no throw.
  const failing = await machineHwid({ platform: 'win32', readNative: () => Promise.reject(new Error('no addon')) });
  assert.match(failing.hwid, /^[0-9a-f]{64}$/);
  assert.deepEqual(failing.inputs, []);
  const native = await machineHwid({ platform: 'win32', readNative: async () => ({ machineGuid: 'G', smbiosUuid: 'U' }) });
  assert.deepEqual(native.inputs, ['machine-guid', 'smbios-uuid']);
  assert.notEqual(native.hwid, failing.hwid);
});

test('token bucket: a burst, then one call per refill interval, with the wait in whole seconds', () => {
  let now = 0;
  const bucket = new TokenBucket({ burst: 2, perSecond: 0.5 }, () => now);
  assert.equal(bucket.take(), 0);
  assert.equal(bucket.take(), 0);
  assert.equal(bucket.take(), 2, 'empty: the next call in 2 s');
  now += 1000;
  assert.equal(bucket.take(), 1, 'half a token back: 1 s to go');
  now += 1000;
  assert.equal(bucket.take(), 0);
  now += 60_000;
  assert.equal(bucket.take(), 0);
  assert.equal(bucket.take(), 0);
  assert.equal(bucket.take(), 2, 'refill stops at the burst');
});
