/**
 * Engine loss for real: our cgroup links are detached from outside with `bpftool link detach` (the
 * links of this service only, found through its /proc/<pid>/fdinfo). Within a second /status says DOWN
 * and writes get 503; within five the service has re-attached by itself, counted the restart and enforces
 * its BLOCK rule again.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { privilegedSuite } from '../helpers/privileged.js';
import { copyExecutable } from '../net/iperf.js';
import { run } from '../net/exec.js';
import { NetClampService, eventually, ruleDraft } from './service.js';
import { startHttpFixture, timedRun } from './http-fixture.js';

const CURL = '/usr/bin/curl';

/** Ids of the cgroup bpf_links a process holds open. */
function cgroupLinkIds(pid: number): number[] {
  const ids: number[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    let info: string;
    try {
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // closed meanwhile
    }
    if (!/^link_type:\s+cgroup$/m.test(info)) continue;
    const id = /^link_id:\s+(\d+)$/m.exec(info);
    if (id) ids.push(Number(id[1]));
  }
  return ids.sort((a, b) => a - b);
}

describe('engine loss (e2e)', privilegedSuite(), () => {
  test('links detached from outside: DOWN and 503 within 1 s, re-attached with the rule enforced within 5 s', async (t) => {
    const service = await NetClampService.start();
    t.after(() => service.dispose());
    const http = await startHttpFixture();
    t.after(() => http.close());
    const app = copyExecutable(CURL);
    t.after(() => app.remove());
    const curlArgs = ['-sS', '-o', '/dev/null', '--max-time', '5', http.url('/small')];

    const rule = await service.createRule(ruleDraft({ app_path: app.path, action: 'BLOCK' }));
    assert.equal(rule.sync_state, 'SYNCED', `rule not synced: ${rule.sync_error}`);
    assert.notEqual((await timedRun(app.path, curlArgs, 10_000)).code, 0, 'the rule does not block before the test starts');

    const links = cgroupLinkIds(service.pid!);
    assert.ok(links.length >= 2, `the service holds ${links.length} cgroup links`);
    const detachedAt = performance.now();
    for (const id of links) {
      const result = await run('bpftool', ['link', 'detach', 'id', String(id)], { allowFailure: true });
      assert.equal(result.code, 0, `bpftool link detach id ${id}: ${result.stderr}`);
    }

    // Within one second: /status says DOWN and a write is refused with Retry-After.
    let down: Record<string, unknown> | null = null;
    while (performance.now() - detachedAt < 1000 && down === null) {
      const status = await service.status();
      if (status.wfp_session_state !== 'OPEN') down = status;
    }
    const noticedMs = performance.now() - detachedAt;
    t.diagnostic(`DOWN noticed ${noticedMs.toFixed(0)} ms after the detach`);
    assert.ok(down, 'the service did not notice the detach within 1 s');
    assert.equal(down.wfp_active, false);
    assert.ok(['DOWN', 'RECOVERING'].includes(String(down.wfp_session_state)));
    // The re-open may already be under way; a write during the outage must be refused, not half-done.
    const write = await service.request('POST', '/rules', ruleDraft({ app_path: app.path, action: 'ALLOW', name: 'during outage' }));
    if (write.status !== 201) {
      assert.equal(write.status, 503);
      assert.ok(Number(write.headers.get('retry-after')) >= 1, 'a 503 without Retry-After');
    } else {
      t.diagnostic('the engine was back before the write went out (re-attach took < one request)');
    }

    const recovered = await eventually(async () => {
      const status = await service.status();
      return status.wfp_session_state === 'OPEN' ? status : null;
    }, 5000 - (performance.now() - detachedAt), 50);
    const recoveredMs = performance.now() - detachedAt;
    t.diagnostic(`OPEN again ${recoveredMs.toFixed(0)} ms after the detach`);
    assert.ok(recovered, 'the service did not recover within 5 s');
    assert.equal(recovered.wfp_active, true);
    assert.equal(recovered.bfe_restarts, 1);
    assert.ok(cgroupLinkIds(service.pid!).every((id) => !links.includes(id)), 'new links, not the detached ones');

    const blocked = await timedRun(app.path, curlArgs, 10_000);
    assert.notEqual(blocked.code, 0, 'the BLOCK rule is not enforced after recovery');
    assert.ok(performance.now() - detachedAt < 6000);
    const stored = await service.expect<{ sync_state: string }>(200, 'GET', `/rules/${rule.id}`);
    assert.equal(stored.sync_state, 'SYNCED');
  });
});
