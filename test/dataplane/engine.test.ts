/**
 * The Linux data plane driven through NativeEngine as root, with real traffic on loopback: a copy of curl
 * is the application, a node HTTP server in this (exempt) process is the peer.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EngineError, fingerprintOf } from '../../lib/engine/engine.js';
import { NativeEngine } from '../../lib/engine/native.js';
import { privilegedSuite } from '../helpers/privileged.js';
import {
  CURL, cgroupAttachedIds, copyOfCurl, curlArgs, loadedProgramIds, ncProgramsOf, rule, run, sleep, start, startPeer,
  type AppCopy, type Peer,
} from './support.js';

describe('Linux data plane (NativeEngine, loopback)', privilegedSuite(), () => {
  let engine: NativeEngine;
  let app: AppCopy;
  let peer: Peer;
  let nextId = 1000;
  const newId = (): number => nextId++;

  before(async () => {
    app = copyOfCurl();
    peer = await startPeer();
    engine = new NativeEngine();
    await engine.open();
  });

  after(async () => {
    await engine?.close();
    await peer?.close();
    app?.remove();
  });

  async function withRules<T>(rules: Parameters<NativeEngine['applyRule']>[0][], body: () => Promise<T>): Promise<T> {
    try {
      for (const r of rules) await engine.applyRule(r);
      return await body();
    } finally {
      for (const r of rules) await engine.removeRule(r.id);
    }
  }

  test('status is OPEN with filtering and shaping attached', () => {
    const status = engine.status();
    assert.deepEqual(status, { platform: 'linux', filtering: true, shaping: true, state: 'OPEN', detail: null, restarts: 0 });
  });

  test('BLOCK: the copy fails at once, /usr/bin/curl still works, the attempt is counted', async () => {
    const before = await run(app.path, curlArgs(peer.url('/small')));
    assert.equal(before.code, 0, `the copy failed before any rule: ${before.stderr}`);

    const id = newId();
    await withRules([rule({ id, action: 'BLOCK', appPath: app.path, resetCounters: true })], async () => {
      const blocked = await run(app.path, curlArgs(peer.url('/small')));
      assert.notEqual(blocked.code, 0, 'the blocked copy succeeded');
      assert.ok(blocked.elapsedMs < 1000, `failing took ${blocked.elapsedMs.toFixed(0)} ms`);
      assert.match(blocked.stderr, /Couldn't connect|Failed to connect|not permitted/i);

      const original = await run(CURL, curlArgs(peer.url('/small')));
      assert.equal(original.code, 0, `/usr/bin/curl was blocked too: ${original.stderr}`);

      const counters = await engine.readCounters();
      const mine = counters.rules.find((r) => r.id === id);
      assert.ok(mine && mine.blocked >= 1, `rule counters: ${JSON.stringify(mine)}`);
      assert.ok(counters.blocked >= 1);
    });

    const afterRemoval = await run(app.path, curlArgs(peer.url('/small')));
    assert.equal(afterRemoval.code, 0, `the copy still fails after removeRule: ${afterRemoval.stderr}`);
  });

  test('BLOCK applied during a transfer ends it within one second', async () => {
    const transfer = start(app.path, curlArgs(peer.url('/trickle?ms=20000'), 30));
    await sleep(1000);
    const id = newId();
    await withRules([rule({ id, action: 'BLOCK', appPath: app.path })], async () => {
      const blockedAt = performance.now();
      // applyRule already resolved inside withRules; measure from just before it to be strict.
      const result = await Promise.race([transfer.done, sleep(5000).then(() => null)]);
      assert.ok(result, 'the transfer kept running after BLOCK');
      assert.notEqual(result.code, 0, 'the transfer finished successfully despite BLOCK');
      const endedAfterMs = performance.now() - blockedAt;
      assert.ok(endedAfterMs < 1000, `the transfer ended ${endedAfterMs.toFixed(0)} ms after BLOCK`);
    }).finally(() => transfer.kill());
  });

  test('LIMIT 1 MiB/s on a download stays at or below the limit', async () => {
    const limit = 1024 * 1024;
    const id = newId();
    const bytes = 4 * limit;
    await withRules(
      [rule({ id, action: 'LIMIT', appPath: app.path, rateDownBytesPerSec: limit, resetCounters: true })],
      async () => {
        const result = await run(app.path, curlArgs(peer.url(`/bytes?n=${bytes}`), 60, ['-w', '%{size_download} %{time_total}']), 70_000);
        assert.equal(result.code, 0, result.stderr);
        const [size, seconds] = result.stdout.trim().split(' ').map(Number);
        assert.equal(size, bytes);
        const ratio = size! / seconds! / limit;
        console.log(`# download LIMIT ${limit} B/s: ${ratio.toFixed(3)} x`);
        assert.ok(ratio <= 1.03, `download ran at ${ratio.toFixed(3)} x the limit`);
        assert.ok(ratio >= 0.1, `download ran at only ${ratio.toFixed(3)} x the limit`);
        const mine = (await engine.readCounters()).rules.find((r) => r.id === id);
        assert.ok(mine && mine.bytesDown >= bytes, `rule counted ${mine?.bytesDown} bytes down`);
      },
    );
  });

  test('LIMIT on upload only leaves downloads alone and clamps uploads', async () => {
    const limit = 1024 * 1024;
    const id = newId();
    const upload = join(app.path, '..', 'upload.bin');
    writeFileSync(upload, Buffer.alloc(8 * limit, 0x62));
    await withRules([rule({ id, action: 'LIMIT', appPath: app.path, rateUpBytesPerSec: limit })], async () => {
      const down = await run(app.path, curlArgs(peer.url(`/bytes?n=${8 * limit}`), 30, ['-w', '%{speed_download}']));
      assert.equal(down.code, 0, down.stderr);
      assert.ok(Number(down.stdout) > 4 * limit, `the download was clamped to ${down.stdout} B/s`);

      // Steady state from the rule's counters, past the start-up burst the bucket allows.
      const args = curlArgs(peer.url('/sink'), 60, ['--data-binary', `@${upload}`, '-H', 'Expect:']);
      const transfer = start(app.path, args, 70_000);
      try {
        await sleep(2000);
        const upAt = async (): Promise<[number, number]> => [
          (await engine.readCounters()).rules.find((r) => r.id === id)?.bytesUp ?? 0,
          performance.now(),
        ];
        const [bytes1, t1] = await upAt();
        await sleep(4000);
        const [bytes2, t2] = await upAt();
        const ratio = (bytes2 - bytes1) / ((t2 - t1) / 1000) / limit;
        console.log(`# upload LIMIT ${limit} B/s, steady state: ${ratio.toFixed(3)} x`);
        assert.ok(ratio <= 1.03, `upload ran at ${ratio.toFixed(3)} x the limit`);
        assert.ok(ratio >= 0.5, `upload ran at only ${ratio.toFixed(3)} x the limit`);
        const result = await transfer.done;
        assert.equal(result.code, 0, result.stderr);
      } finally {
        transfer.kill();
      }
    });
  });

  test('remote port and remote address conditions', async () => {
    const other = await startPeer('127.0.0.2');
    try {
      const byPort = newId();
      await withRules([rule({ id: byPort, action: 'BLOCK', appPath: app.path, remotePort: peer.port })], async () => {
        assert.notEqual((await run(app.path, curlArgs(peer.url('/small')))).code, 0, 'port rule did not block its port');
        const elsewhere = await run(app.path, curlArgs(other.url('/small')));
        assert.equal(elsewhere.code, 0, `port rule blocked another port: ${elsewhere.stderr}`);
      });

      const byHost = newId();
      await withRules([rule({ id: byHost, action: 'BLOCK', appPath: app.path, remoteAddress: '127.0.0.2' })], async () => {
        assert.notEqual((await run(app.path, curlArgs(other.url('/small')))).code, 0, 'address rule did not block 127.0.0.2');
        assert.equal((await run(app.path, curlArgs(peer.url('/small')))).code, 0, 'address rule blocked 127.0.0.1');
      });

      const byPrefix = newId();
      await withRules([rule({ id: byPrefix, action: 'BLOCK', appPath: app.path, remoteAddress: '127.0.0.0/8' })], async () => {
        assert.notEqual((await run(app.path, curlArgs(other.url('/small')))).code, 0, 'prefix rule did not block 127.0.0.2');
        assert.notEqual((await run(app.path, curlArgs(peer.url('/small')))).code, 0, 'prefix rule did not block 127.0.0.1');
      });

      const v6Prefix = newId();
      await withRules([rule({ id: v6Prefix, action: 'BLOCK', appPath: app.path, remoteAddress: '2001:db8::/32' })], async () => {
        assert.equal((await run(app.path, curlArgs(peer.url('/small')))).code, 0, 'an IPv6 prefix blocked IPv4 traffic');
      });

      const udpOnly = newId();
      await withRules([rule({ id: udpOnly, action: 'BLOCK', appPath: app.path, protocol: 'UDP' })], async () => {
        assert.equal((await run(app.path, curlArgs(peer.url('/small')))).code, 0, 'a UDP rule blocked TCP');
      });

      const inboundOnly = newId();
      await withRules([rule({ id: inboundOnly, action: 'BLOCK', appPath: app.path, direction: 'INBOUND' })], async () => {
        assert.equal((await run(app.path, curlArgs(peer.url('/small')))).code, 0, 'an INBOUND rule blocked a connection the app made');
      });
    } finally {
      await other.close();
    }
  });

  test('priority decides; on a tie BLOCK beats ALLOW whatever the ids', async () => {
    const allowLow = newId();
    const block = newId();
    // ALLOW has the lower id, same priority: BLOCK still wins.
    await withRules(
      [rule({ id: allowLow, action: 'ALLOW', appPath: app.path, priority: 50 }), rule({ id: block, action: 'BLOCK', appPath: app.path, priority: 50 })],
      async () => {
        assert.notEqual((await run(app.path, curlArgs(peer.url('/small')))).code, 0, 'ALLOW won a tie against BLOCK');
        // A higher-priority ALLOW overrides, also for a global BLOCK restricted to our peer's port.
        const allowHigh = newId();
        await withRules([rule({ id: allowHigh, action: 'ALLOW', appPath: app.path, priority: 51 })], async () => {
          const allowed = await run(app.path, curlArgs(peer.url('/small')));
          assert.equal(allowed.code, 0, `a higher-priority ALLOW did not win: ${allowed.stderr}`);
        });
        assert.notEqual((await run(app.path, curlArgs(peer.url('/small')))).code, 0, 'removing the ALLOW did not restore the BLOCK');
      },
    );
  });

  test('a rule for every application (app_path "") applies to all apps but never to the engine process', async () => {
    const id = newId();
    await withRules([rule({ id, action: 'BLOCK', appPath: '', remotePort: peer.port })], async () => {
      assert.notEqual((await run(app.path, curlArgs(peer.url('/small')))).code, 0, 'the copy was not blocked');
      assert.notEqual((await run(CURL, curlArgs(peer.url('/small')))).code, 0, '/usr/bin/curl was not blocked');
      const response = await fetch(peer.url('/small'));
      assert.equal(response.status, 200, 'the engine process itself was blocked');
    });
  });

  test('installedRules reads back ids and fingerprints from the kernel', async () => {
    const a = rule({ id: newId(), action: 'BLOCK', appPath: app.path, remotePort: 9 });
    const b = rule({ id: newId(), action: 'LIMIT', appPath: '', rateUpBytesPerSec: 1_000_000, remotePort: 9 });
    await withRules([a, b], async () => {
      const installed = await engine.installedRules();
      assert.deepEqual(
        installed.filter((r) => r.id === a.id || r.id === b.id).sort((x, y) => x.id - y.id),
        [{ id: a.id, fingerprint: fingerprintOf(a) }, { id: b.id, fingerprint: fingerprintOf(b) }],
      );
      const changed = { ...a, priority: 7 };
      await engine.applyRule(changed);
      const again = await engine.installedRules();
      assert.deepEqual(again.filter((r) => r.id === a.id), [{ id: a.id, fingerprint: fingerprintOf(changed) }]);
      assert.notEqual(fingerprintOf(changed), fingerprintOf(a));
    });
    const left = await engine.installedRules();
    assert.ok(!left.some((r) => r.id === a.id || r.id === b.id), `removed rules still installed: ${JSON.stringify(left)}`);
  });

  test('a missing app path rejects with ENOENT and removes the previous version', async () => {
    const id = newId();
    await engine.applyRule(rule({ id, action: 'BLOCK', appPath: app.path, remotePort: 9 }));
    assert.ok((await engine.installedRules()).some((r) => r.id === id));
    await assert.rejects(
      engine.applyRule(rule({ id, action: 'BLOCK', appPath: '/nonexistent/netclamp-test-app', remotePort: 9 })),
      (error: unknown) => error instanceof EngineError && error.code === 'ENOENT' && error.errno === 2,
    );
    assert.ok(!(await engine.installedRules()).some((r) => r.id === id), 'the rule stayed installed');
  });

  test('FILENAME and DIRECTORY rules install (and read back) before any executable matches them', async () => {
    // Enforcement is tested in match.test.ts; here only that a pattern with no file behind it is not ENOENT.
    for (const matchMode of ['FILENAME', 'DIRECTORY'] as const) {
      const r = rule({ id: newId(), action: 'BLOCK', appPath: `/nonexistent/netclamp-${process.pid}-${matchMode}`, matchMode });
      await withRules([r], async () => {
        const installed = (await engine.installedRules()).find((i) => i.id === r.id);
        assert.equal(installed?.fingerprint, fingerprintOf(r), `${matchMode} rule not read back`);
      });
      assert.ok(!(await engine.installedRules()).some((i) => i.id === r.id), `${matchMode} rule stayed installed`);
    }
  });

  test('counters reset on request and count bytes both ways', async () => {
    const id = newId();
    await withRules([rule({ id, action: 'ALLOW', appPath: app.path, resetCounters: true })], async () => {
      const result = await run(app.path, curlArgs(peer.url('/bytes?n=200000')));
      assert.equal(result.code, 0, result.stderr);
      const mine = (await engine.readCounters()).rules.find((r) => r.id === id);
      assert.ok(mine, 'no counters for the rule');
      assert.ok(mine.bytesDown >= 200_000, `bytesDown ${mine.bytesDown}`);
      assert.ok(mine.bytesUp > 0, `bytesUp ${mine.bytesUp}`);
      await engine.applyRule(rule({ id, action: 'ALLOW', appPath: app.path, resetCounters: true, priority: 99 }));
      const reset = (await engine.readCounters()).rules.find((r) => r.id === id);
      assert.deepEqual(reset, { id, bytesUp: 0, bytesDown: 0, blocked: 0 });
    });
  });

  test('an executable replaced in place keeps being matched under its old and new identity', async () => {
    const replaced = copyOfCurl();
    const id = newId();
    try {
      await engine.applyRule(rule({ id, action: 'ALLOW', appPath: replaced.path }));
      const old = start(replaced.path, curlArgs(peer.url('/trickle?ms=20000'), 30));
      try {
        await sleep(500);
        // Replace the file (new inode) while the old process runs, then re-apply as the service would.
        copyFileSync(CURL, replaced.path + '.new');
        chmodSync(replaced.path + '.new', 0o755);
        renameSync(replaced.path + '.new', replaced.path);
        await engine.applyRule(rule({ id, action: 'BLOCK', appPath: replaced.path }));
        const result = await Promise.race([old.done, sleep(3000).then(() => null)]);
        assert.ok(result && result.code !== 0, 'the process running the old file was not blocked');
        assert.notEqual((await run(replaced.path, curlArgs(peer.url('/small')))).code, 0, 'the new file was not blocked');
      } finally {
        old.kill();
        await engine.removeRule(id);
      }
    } finally {
      replaced.remove();
    }
  });
});

describe('Linux data plane lifetime', privilegedSuite(), () => {
  const script = (body: string): string => `
    import { NativeEngine } from ${JSON.stringify(new URL('../../lib/engine/native.js', import.meta.url).href)};
    const engine = new NativeEngine();
    globalThis.engine = engine; // an unreachable engine is closed by its finalizer
    await engine.open();
    process.stdout.write('open\\n');
    ${body}
  `;

  async function childWithEngine(body: string): Promise<{ child: ChildProcess; progs: number[] }> {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script(body)], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`child exited with ${code} before opening the engine`)));
    });
    const progs = ncProgramsOf(child.pid!);
    return { child, progs };
  }

  function assertGone(progs: number[]): void {
    const loaded = loadedProgramIds();
    const attached = cgroupAttachedIds();
    for (const id of progs) {
      assert.ok(!loaded.has(id), `nc_ program ${id} is still loaded`);
      assert.ok(!attached.has(id), `nc_ program ${id} is still attached to a cgroup`);
    }
  }

  test('close() detaches and unloads every nc_ program of the engine', async () => {
    const { child, progs } = await childWithEngine(`
      process.stdin.once('data', async () => { await engine.close(); process.stdout.write('closed\\n'); });
      process.stdin.resume();
    `);
    try {
      assert.ok(progs.length >= 10, `expected the engine's nc_ programs, saw ${JSON.stringify(progs)}`);
      const attached = cgroupAttachedIds();
      assert.ok(progs.some((id) => attached.has(id)), 'the programs were not attached to the cgroup root');
      const closed = new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => d.toString().includes('closed') && resolve()));
      child.stdin!.write('close\n');
      await closed;
      await sleep(200); // program release is asynchronous (RCU)
      assertGone(progs);
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('a crashed engine process leaves nothing attached (links are not pinned)', async (t) => {
    const { child, progs } = await childWithEngine(`setInterval(() => {}, 1000);`);
    t.after(() => child.kill('SIGKILL'));
    assert.ok(progs.length >= 10, `expected the engine's nc_ programs, saw ${JSON.stringify(progs)}`);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    await sleep(500);
    assertGone(progs);
  });

  test('connections opened before the engine are tagged at open() and obey a later BLOCK', async (t) => {
    const app = copyOfCurl();
    t.after(() => app.remove());
    const peer = await startPeer();
    t.after(() => peer.close());
    const transfer = start(app.path, curlArgs(peer.url('/trickle?ms=20000'), 30));
    t.after(() => transfer.kill());
    await sleep(700);
    const late = new NativeEngine();
    t.after(() => late.close());
    await late.open();
    await late.applyRule(rule({ id: 1, action: 'BLOCK', appPath: app.path }));
    const blockedAt = performance.now();
    const result = await Promise.race([transfer.done, sleep(3000).then(() => null)]);
    assert.ok(result, 'the pre-existing transfer kept running after BLOCK');
    assert.notEqual(result.code, 0);
    assert.ok(performance.now() - blockedAt < 1000, 'the pre-existing transfer took more than a second to end');
  });

  test('without privileges the engine reports UNAVAILABLE and open() rejects', async () => {
    const code = `
      import { NativeEngine } from ${JSON.stringify(new URL('../../lib/engine/native.js', import.meta.url).href)};
      const engine = new NativeEngine();
      const before = engine.status();
      const error = await engine.open().then(() => null, (e) => e);
      process.stdout.write(JSON.stringify({ before, error: error && { code: error.code, name: error.name } }));
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', code], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise((resolve) => child.once('close', resolve));
    const report = JSON.parse(out || 'null') as { before: { state: string; detail: string | null }; error: { code: string; name: string } | null } | null;
    assert.ok(report, `the unprivileged child printed nothing: ${err}`);
    assert.equal(report.before.state, 'UNAVAILABLE');
    assert.match(report.before.detail ?? '', /root|CAP_BPF/);
    assert.ok(report.error, 'open() succeeded without privileges');
    assert.equal(report.error.name, 'EngineError');
  });

  test('without the addon the engine says ADDON_MISSING and how to fix it', () => {
    assert.throws(
      () => new NativeEngine({ packageRoot: mkdtempSync(join(tmpdir(), 'nc-noaddon-')) }),
      (error: unknown) =>
        error instanceof EngineError && error.code === 'ADDON_MISSING' && /npm run build:addon/.test(error.message),
    );
  });
});
