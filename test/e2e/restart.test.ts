/**
 * Lifecycle: SIGTERM stops the service cleanly and leaves nothing of NetClamp in the kernel; a restart
 * on the same data dir brings the rules back and enforces them again.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { privilegedSuite } from '../helpers/privileged.js';
import { copyExecutable } from '../net/iperf.js';
import { NetClampService, ruleDraft, type StoredRule } from './service.js';
import { startHttpFixture, timedRun } from './http-fixture.js';
import { leftoversSince, netclampProgramIds } from './bpf-state.js';

describe('service restart and stop (e2e)', privilegedSuite(), () => {
  test('rules survive a restart and are enforced again; stop leaves no BPF behind', async (t) => {
    const programsBefore = await netclampProgramIds();
    const service = await NetClampService.start();
    t.after(() => service.dispose());
    const http = await startHttpFixture();
    t.after(() => http.close());
    const app = copyExecutable('/usr/bin/curl');
    t.after(() => app.remove());
    const curlArgs = ['-sS', '-o', '/dev/null', '--max-time', '10', http.url('/small')];

    const ours = [...(await netclampProgramIds())].filter((id) => !programsBefore.has(id));
    assert.ok(ours.length > 0, 'a running service should have nc_* programs loaded');

    const created = await service.createRule(ruleDraft({ app_path: app.path, action: 'BLOCK' }));
    assert.notEqual((await timedRun(app.path, curlArgs, 15_000)).code, 0, 'the rule did not block before the restart');
    const countedBefore = (await service.expect<StoredRule>(200, 'GET', `/rules/${created.id}`)).blocked_count;
    assert.ok(countedBefore > 0, 'the rule counted no blocked attempt');

    const stopped = await service.stop();
    assert.equal(stopped.code, 0, `service exit after SIGTERM: ${stopped.code ?? stopped.signal}`);
    assert.match(service.output, /netclamp stopped: /, 'the service says it has stopped');
    assert.deepEqual(await leftoversSince(programsBefore), [], 'NetClamp left BPF state behind after stop');
    // With the service gone, nothing blocks the copy: proof the block came from the service.
    const unblocked = await timedRun(app.path, curlArgs, 15_000);
    assert.equal(unblocked.code, 0, `copy of curl still blocked with the service stopped: ${unblocked.stderr}`);

    await service.restart();
    const rules = await service.expect<StoredRule[] | { items: StoredRule[] }>(200, 'GET', '/rules');
    const list = Array.isArray(rules) ? rules : rules.items;
    const restored = list.find((rule) => rule.id === created.id);
    assert.ok(restored, `rule ${created.id} missing after restart`);
    assert.equal(restored.app_path, app.path);
    assert.equal(restored.action, 'BLOCK');
    const stored = await service.expect<StoredRule>(200, 'GET', `/rules/${created.id}`);
    assert.equal(stored.sync_state, 'SYNCED', `restored rule not synced: ${stored.sync_error}`);
    // The kernel counts from zero again; what the rule counted before SIGTERM was saved at shutdown.
    assert.ok(stored.blocked_count >= countedBefore, `blocked_count ${stored.blocked_count} after the restart, ${countedBefore} before`);
    assert.equal(stored.revision, created.revision);

    const blockedAgain = await timedRun(app.path, curlArgs, 15_000);
    assert.notEqual(blockedAgain.code, 0, 'the restored rule is not enforced');
    assert.equal((await timedRun('/usr/bin/curl', curlArgs, 15_000)).code, 0, '/usr/bin/curl blocked after restart');

    const stoppedAgain = await service.stop();
    assert.equal(stoppedAgain.code, 0);
    assert.deepEqual(await leftoversSince(programsBefore), [], 'NetClamp left BPF state behind after the second stop');
  });
});
