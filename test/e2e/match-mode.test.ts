/**
 * Issue 4 acceptance through the REST service: a FILENAME rule catches a copy of curl started from a
 * folder created after the rule was made; a DIRECTORY rule catches a copy in a nested subfolder only.
 * Names are unique to this run so the rules touch no other curl on the machine.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { privilegedSuite } from '../helpers/privileged.js';
import { NetClampService, ruleDraft, type StoredRule } from './service.js';
import { startHttpFixture, timedRun } from './http-fixture.js';

const CURL = '/usr/bin/curl';

function curlCopyAt(dir: string, name: string): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  copyFileSync(CURL, path);
  chmodSync(path, 0o755);
  return path;
}

describe('FILENAME / DIRECTORY rules (e2e, loopback)', privilegedSuite(), () => {
  test('FILENAME BLOCK catches a copy started from a new folder; DIRECTORY catches nested copies only', async (t) => {
    const service = await NetClampService.start();
    t.after(() => service.dispose());
    const http = await startHttpFixture();
    t.after(() => http.close());
    const scratch = mkdtempSync(join(tmpdir(), 'nc-e2e-match-'));
    t.after(() => rmSync(scratch, { recursive: true, force: true }));
    const curlArgs = ['-sS', '-o', '/dev/null', '--max-time', '5', http.url('/small')];
    const name = `nc-e2e-${process.pid}`;

    const byName = await service.createRule(ruleDraft({ app_path: `/usr/local/bin/${name}`, action: 'BLOCK', match_mode: 'FILENAME' }));
    assert.equal(byName.sync_state, 'SYNCED', `FILENAME rule not synced: ${byName.sync_error}`);
    const newFolderCopy = curlCopyAt(join(scratch, 'created-after-the-rule'), name);
    const blocked = await timedRun(newFolderCopy, curlArgs, 10_000);
    assert.notEqual(blocked.code, 0, 'the same-named copy in a new folder got through');
    assert.ok(blocked.elapsedMs < 1000, `the copy took ${blocked.elapsedMs.toFixed(0)} ms to fail`);
    const other = await timedRun(curlCopyAt(join(scratch, 'created-after-the-rule'), `${name}-x`), curlArgs, 10_000);
    assert.equal(other.code, 0, `a differently named copy was blocked: ${other.stderr}`);
    const stored = await service.expect<StoredRule>(200, 'GET', `/rules/${byName.id}`);
    assert.ok(stored.blocked_count > 0, 'the FILENAME rule counted no blocked attempt');
    await service.expect(204, 'DELETE', `/rules/${byName.id}`);
    const afterDelete = await timedRun(newFolderCopy, curlArgs, 10_000);
    assert.equal(afterDelete.code, 0, `the copy still fails after the rule was deleted: ${afterDelete.stderr}`);

    const folder = join(scratch, 'apps');
    const byFolder = await service.createRule(ruleDraft({ app_path: folder, action: 'BLOCK', match_mode: 'DIRECTORY' }));
    assert.equal(byFolder.sync_state, 'SYNCED', `DIRECTORY rule not synced: ${byFolder.sync_error}`);
    const nested = await timedRun(curlCopyAt(join(folder, 'vendor', 'tool'), name), curlArgs, 10_000);
    assert.notEqual(nested.code, 0, 'the nested copy got through');
    const outside = await timedRun(curlCopyAt(join(scratch, 'elsewhere'), name), curlArgs, 10_000);
    assert.equal(outside.code, 0, `a copy outside the folder was blocked: ${outside.stderr}`);
  });
});
