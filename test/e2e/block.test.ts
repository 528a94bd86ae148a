/**
 * BLOCK on a copy of curl against a loopback HTTP server: new connections of the copy fail at once while
 * the original curl works, and a download already running under LIMIT dies within a second of the rule
 * turning into BLOCK.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { privilegedSuite } from '../helpers/privileged.js';
import { copyExecutable } from '../net/iperf.js';
import { sleep } from '../net/exec.js';
import { NetClampService, eventually, ruleDraft, type StoredRule } from './service.js';
import { startHttpFixture, timedRun } from './http-fixture.js';

const CURL = '/usr/bin/curl';

describe('BLOCK (e2e, loopback)', privilegedSuite(), () => {
  test('a blocked copy of curl fails at once; /usr/bin/curl still works; total_blocked grows', async (t) => {
    const service = await NetClampService.start();
    t.after(() => service.dispose());
    const http = await startHttpFixture();
    t.after(() => http.close());
    const app = copyExecutable(CURL);
    t.after(() => app.remove());
    const curlArgs = ['-sS', '-o', '/dev/null', '--max-time', '10', http.url('/small')];

    // Without a rule the copy works: whatever fails later is the rule's doing.
    const before = await timedRun(app.path, curlArgs, 15_000);
    assert.equal(before.code, 0, `copy of curl failed before any rule: ${before.stderr}`);
    const blockedBefore = (await service.status()).total_blocked;

    const rule = await service.createRule(ruleDraft({ app_path: app.path, action: 'BLOCK', direction: 'BOTH' }));
    assert.equal(rule.sync_state, 'SYNCED', `rule not synced: ${rule.sync_error}`);

    const blocked = await timedRun(app.path, curlArgs, 15_000);
    assert.notEqual(blocked.code, 0, 'the blocked copy of curl succeeded');
    assert.equal(blocked.signal, null, 'the blocked copy hung until killed instead of failing');
    assert.ok(blocked.elapsedMs < 1000, `the blocked copy took ${blocked.elapsedMs.toFixed(0)} ms to fail`);

    const original = await timedRun(CURL, curlArgs, 15_000);
    assert.equal(original.code, 0, `/usr/bin/curl was blocked too: ${original.stderr}`);

    const after = await eventually(async () => {
      const status = await service.status();
      return status.total_blocked > blockedBefore ? status : null;
    }, 3000);
    assert.ok(after, 'total_blocked did not grow');
    const stored = await service.expect<StoredRule>(200, 'GET', `/rules/${rule.id}`);
    assert.ok(stored.blocked_count > 0, 'the rule counted no blocked attempt');
  });

  test('a download running under LIMIT stops within one second when the rule becomes BLOCK', async (t) => {
    const service = await NetClampService.start();
    t.after(() => service.dispose());
    const http = await startHttpFixture();
    t.after(() => http.close());
    const app = copyExecutable(CURL);
    t.after(() => app.remove());

    const limitBytesPerSec = 1024 * 1024;
    const limit = ruleDraft({
      app_path: app.path,
      action: 'LIMIT',
      direction: 'BOTH',
      rate_limit_down_bytes_per_sec: limitBytesPerSec,
    });
    const rule = await service.createRule(limit);
    assert.equal(rule.sync_state, 'SYNCED', `rule not synced: ${rule.sync_error}`);

    const download = spawn(app.path, ['-sS', '-o', '/dev/null', '--max-time', '60', http.url('/stream')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    t.after(() => {
      if (download.exitCode === null && download.signalCode === null) download.kill('SIGKILL');
    });
    const exited = new Promise<{ code: number | null; at: number }>((resolve) => {
      download.once('exit', (code) => resolve({ code, at: performance.now() }));
    });

    await sleep(2500);
    assert.equal(download.exitCode, null, 'the limited download ended on its own');
    const running = await service.expect<StoredRule>(200, 'GET', `/rules/${rule.id}`);
    assert.ok(running.bytes_down > 0, 'the LIMIT rule saw no download bytes');
    assert.ok(
      running.bytes_down < 2.5 * 3 * limitBytesPerSec,
      `${running.bytes_down} bytes in ~2.5 s is not limited to ${limitBytesPerSec} B/s`,
    );

    const blockSentAt = performance.now();
    await service.updateRule(rule.id, { ...limit, action: 'BLOCK', rate_limit_down_bytes_per_sec: null });
    const outcome = await Promise.race([exited, sleep(5000).then(() => null)]);
    assert.ok(outcome, 'the download still ran 5 s after the rule became BLOCK');
    const stopMs = outcome.at - blockSentAt;
    t.diagnostic(`download stopped ${stopMs.toFixed(0)} ms after the PUT was sent`);
    assert.notEqual(outcome.code, 0, 'curl reported success for a download cut by BLOCK');
    assert.ok(stopMs <= 1000, `the download stopped ${stopMs.toFixed(0)} ms after the PUT`);
  });
});
