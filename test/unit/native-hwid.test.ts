import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NativeEngine } from '../../lib/engine/native.js';
import { engineHwidReader } from '../../lib/license/hwid.js';

function nativeEngine(): NativeEngine | string {
  try {
    return new NativeEngine();
  } catch (error) {
    return (error as Error).message;
  }
}

test('the native engine hands the addon\'s hwidInputs() to the HWID code (Windows reads MachineGuid and SMBIOS there)', async (t) => {
  const engine = nativeEngine();
  if (typeof engine === 'string') {
    t.skip(`the addon cannot be loaded: ${engine}`);
    return;
  }
  const reader = engineHwidReader(engine);
  assert.ok(reader, 'lib/license/hwid.ts finds hwidInputs on the engine');
  const inputs = await reader();
  assert.equal(typeof inputs.machineGuid, 'string');
  assert.equal(typeof inputs.smbiosUuid, 'string');
  if (process.platform === 'linux') assert.deepEqual(inputs, { machineGuid: '', smbiosUuid: '' }, 'Linux reads its identifiers itself');
});
