/** A running service reports its data plane attached and keeps its token private. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { privilegedSuite } from '../helpers/privileged.js';
import { NetClampService } from './service.js';

describe('service status (e2e)', privilegedSuite(), () => {
  test('status shows filtering and shaping active; auth.token is mode 0600', async (t) => {
    const service = await NetClampService.start();
    t.after(() => service.dispose());

    const status = await service.status();
    assert.equal(status.platform, 'linux');
    assert.equal(status.wfp_active, true, 'eBPF filtering programs should be attached');
    assert.equal(status.kdrv_active, true, 'eBPF shaping programs should be attached');
    assert.equal(typeof status.version, 'string');
    assert.equal(typeof status.total_blocked, 'number');

    const tokenFile = statSync(join(service.dataDir, 'auth.token'));
    assert.equal(tokenFile.mode & 0o777, 0o600, `auth.token mode is ${(tokenFile.mode & 0o777).toString(8)}`);
    assert.ok(service.token.length >= 43, 'a token of at least 32 random bytes in base64url');

    const unauthorized = await fetch(`${service.baseUrl}/status`);
    assert.equal(unauthorized.status, 401, 'status without the token must be refused');
  });
});
