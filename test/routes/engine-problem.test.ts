import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EngineError } from '../../lib/engine/engine.js';
import { engineProblem } from '../../lib/http/engine-problem.js';

test('engine error codes of both platforms map to problem documents', () => {
  const cases: Array<[string, number]> = [
    ['ENGINE_DOWN', 503], ['BFE_DOWN', 503], ['DRIVER_MISSING', 503], ['ADDON_MISSING', 503],
    ['UNSUPPORTED', 400], ['EINVAL', 400], ['ENOSPC', 409], ['E2BIG', 409],
    ['EPERM', 500], ['BPF_LOAD', 500], ['FWP_E_ALREADY_EXISTS', 500], ['WIN32_5', 500], ['HRESULT_0x80070005', 500],
  ];
  for (const [code, status] of cases) {
    const problem = engineProblem(new EngineError(code, 'boom'));
    assert.equal(problem.status, status, code);
    assert.match(problem.detail, new RegExp(code), `${code}: the detail names the code`);
    assert.equal(problem.headers['Retry-After'] !== undefined, status === 503, `${code}: Retry-After only on 503`);
  }
});
