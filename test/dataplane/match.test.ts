/**
 * FILENAME and DIRECTORY rules on Linux, as root with real loopback traffic: executables are learned as
 * they start (exec notifications) and at applyRule (running processes). Every app is a copy of curl
 * under a name unique to this run, so no rule here can touch another test's or engineer's curl.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NativeEngine } from '../../lib/engine/native.js';
import { privilegedSuite } from '../helpers/privileged.js';
import { CURL, curlArgs, rule, run, sleep, start, startPeer, type Peer } from './support.js';

describe('FILENAME / DIRECTORY match modes (NativeEngine, loopback)', privilegedSuite(), () => {
  let engine: NativeEngine;
  let peer: Peer;
  let scratch: string;
  let nextId = 5000;
  const newId = (): number => nextId++;
  const uniqueName = (tag: string): string => `nc-${tag}-${process.pid}-${nextId}`;

  before(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'nc-match-'));
    peer = await startPeer();
    engine = new NativeEngine();
    await engine.open();
  });

  after(async () => {
    await engine?.close();
    await peer?.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  /** A copy of curl at `dir/name`, creating `dir` (and its parents) first. */
  function curlCopyAt(dir: string, name: string): string {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, name);
    copyFileSync(CURL, path);
    chmodSync(path, 0o755);
    return path;
  }

  async function withRule<T>(r: ReturnType<typeof rule>, body: () => Promise<T>): Promise<T> {
    await engine.applyRule(r);
    try {
      return await body();
    } finally {
      await engine.removeRule(r.id);
    }
  }

  async function assertBlockedAtOnce(path: string, what: string): Promise<void> {
    const result = await run(path, curlArgs(peer.url('/small'), 5));
    assert.notEqual(result.code, 0, `${what} got through`);
    // Refused at connect() (EPERM), not a stall until --max-time: the identity landed before connect.
    assert.match(result.stderr, /Couldn't connect|Failed to connect|not permitted/i, `${what}: ${result.stderr}`);
    assert.ok(result.elapsedMs < 1000, `${what} took ${result.elapsedMs.toFixed(0)} ms to fail`);
  }

  async function assertPasses(path: string, what: string): Promise<void> {
    const result = await run(path, curlArgs(peer.url('/small'), 5));
    assert.equal(result.code, 0, `${what} was blocked: ${result.stderr}`);
  }

  test('FILENAME BLOCK catches a copy started from a folder created after the rule', async () => {
    const name = uniqueName('fn');
    const id = newId();
    await withRule(rule({ id, action: 'BLOCK', matchMode: 'FILENAME', appPath: `/opt/anywhere/${name}`, resetCounters: true }), async () => {
      const folder = join(scratch, `made-later-${id}`);
      const copy = curlCopyAt(folder, name);
      await assertBlockedAtOnce(copy, 'a same-named copy in a new folder');
      // Another folder, another inode, same name: learned too.
      await assertBlockedAtOnce(curlCopyAt(join(scratch, `second-${id}`, 'deeper'), name), 'a second same-named copy');
      await assertPasses(curlCopyAt(folder, `${name}-other`), 'a differently named copy in the same folder');
      await assertPasses(CURL, '/usr/bin/curl');
      const mine = (await engine.readCounters()).rules.find((r) => r.id === id);
      assert.ok(mine && mine.blocked >= 2, `rule counters: ${JSON.stringify(mine)}`);
    });
    await assertPasses(join(scratch, `made-later-${id}`, name), 'the copy after removeRule');
  });

  test('DIRECTORY BLOCK catches copies in nested subfolders, not outside the folder or in a same-prefix sibling', async () => {
    const id = newId();
    const root = join(scratch, `dir-${id}`);
    mkdirSync(root);
    const name = uniqueName('dir');
    await withRule(rule({ id, action: 'BLOCK', matchMode: 'DIRECTORY', appPath: root }), async () => {
      await assertBlockedAtOnce(curlCopyAt(join(root, 'a', 'b', 'c'), name), 'a copy three folders down');
      await assertBlockedAtOnce(curlCopyAt(root, `${name}-top`), 'a copy directly in the folder');
      await assertPasses(curlCopyAt(join(scratch, `outside-${id}`), name), 'a same-named copy outside the folder');
      await assertPasses(curlCopyAt(`${root}-sibling`, name), 'a copy in a sibling whose name starts with the folder name');
    });
  });

  test('a trailing slash on the DIRECTORY path means the same folder', async () => {
    const id = newId();
    const root = join(scratch, `slash-${id}`);
    await withRule(rule({ id, action: 'BLOCK', matchMode: 'DIRECTORY', appPath: `${root}/` }), async () => {
      await assertBlockedAtOnce(curlCopyAt(join(root, 'x'), uniqueName('slash')), 'a copy under the folder');
    });
  });

  test('applyRule picks up processes already running: a FILENAME BLOCK ends their open transfer', async () => {
    const name = uniqueName('running');
    const copy = curlCopyAt(join(scratch, `running-${nextId}`), name);
    const transfer = start(copy, curlArgs(peer.url('/trickle?ms=20000'), 30));
    try {
      await sleep(1000);
      const id = newId();
      await withRule(rule({ id, action: 'BLOCK', matchMode: 'FILENAME', appPath: `/x/${name}` }), async () => {
        const appliedAt = performance.now();
        const result = await Promise.race([transfer.done, sleep(5000).then(() => null)]);
        assert.ok(result, 'the running transfer kept going after the FILENAME BLOCK');
        assert.notEqual(result.code, 0, 'the running transfer finished successfully despite BLOCK');
        const endedAfterMs = performance.now() - appliedAt;
        assert.ok(endedAfterMs < 1000, `ended ${endedAfterMs.toFixed(0)} ms after the rule`);
      });
    } finally {
      transfer.kill();
    }
  });

  test('a FILENAME LIMIT learned at exec shapes the new process (upload at about the limit)', async () => {
    const limit = 1024 * 1024;
    const name = uniqueName('limit');
    const id = newId();
    const body = join(scratch, `body-${id}`);
    writeFileSync(body, Buffer.alloc(6 * limit, 0x62));
    await withRule(
      rule({ id, action: 'LIMIT', matchMode: 'FILENAME', appPath: `/y/${name}`, rateUpBytesPerSec: limit, resetCounters: true }),
      async () => {
        const copy = curlCopyAt(join(scratch, `limit-${id}`), name);
        // Upload: egress shaping is exact enough on loopback to tell shaped from unshaped (~GB/s).
        const result = await run(copy, curlArgs(peer.url('/sink'), 30, ['--data-binary', `@${body}`, '-w', '%{size_upload} %{time_total}']), 40_000);
        assert.equal(result.code, 0, result.stderr);
        const [size, seconds] = result.stdout.trim().split(' ').map(Number);
        const ratio = size! / seconds! / limit;
        console.log(`# FILENAME LIMIT ${limit} B/s, upload of ${size} B: ${ratio.toFixed(3)} x`);
        assert.equal(size, 6 * limit);
        // The one-off debt zone (300 ms of rate) is 5% of this run.
        assert.ok(ratio <= 1.08 && ratio >= 0.8, `upload ran at ${ratio.toFixed(3)} x the limit`);
        const mine = (await engine.readCounters()).rules.find((r) => r.id === id);
        assert.ok(mine && mine.bytesUp >= size!, `rule counted ${mine?.bytesUp} bytes up of ${size}`);
      },
    );
  });

  test('the identity set of a pattern rule is bounded: 64 newer executables evict a running one', async () => {
    const name = uniqueName('lru');
    const id = newId();
    const oldest = curlCopyAt(join(scratch, `lru-${id}`, 'oldest'), name);
    await withRule(rule({ id, action: 'ALLOW', matchMode: 'FILENAME', appPath: `/z/${name}`, resetCounters: true }), async () => {
      const transfer = start(oldest, curlArgs(peer.url('/trickle?ms=30000'), 40));
      try {
        const countedBy = async (): Promise<number> =>
          (await engine.readCounters()).rules.find((r) => r.id === id)?.bytesDown ?? 0;
        await sleep(1000);
        const first = await countedBy();
        await sleep(500);
        assert.ok((await countedBy()) > first, 'the learned transfer is not counted by the rule');
        for (let i = 0; i < 64; i++) {
          // --version opens no socket; the exec alone makes the rule learn the copy.
          assert.equal((await run(curlCopyAt(join(scratch, `lru-${id}`, String(i)), name), ['--version'])).code, 0);
        }
        await sleep(300);
        const evictedAt = await countedBy();
        await sleep(1000);
        assert.equal(await countedBy(), evictedAt, 'the evicted executable is still matched by the rule');
      } finally {
        transfer.kill();
      }
    });
  });
});
