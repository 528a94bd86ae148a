import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cgroupProgramShapers, processShapers, qdiscShapers } from '../../lib/services/competing-shapers.js';
import { startTestApp } from '../helpers/app.js';

test('qdiscs: defaults, mq children and NetClamp\'s own queue devices are not shapers; htb, netem, clsact and a non-default root are', async () => {
  const tc = JSON.stringify([
    { kind: 'noqueue', handle: '0:', dev: 'lo', root: true },
    { kind: 'mq', handle: '0:', dev: 'eth0', root: true },
    { kind: 'fq', handle: '0:', dev: 'eth0', parent: ':1' },
    { kind: 'fq', handle: '0:', dev: 'eth1', root: true },
    { kind: 'htb', handle: '1:', dev: 'eth2', root: true },
    { kind: 'netem', handle: '10:', dev: 'eth2', parent: '1:10' },
    { kind: 'clsact', handle: 'ffff:', dev: 'eth3', parent: 'ffff:fff1' },
    { kind: 'htb', handle: '4e43:', dev: 'nc-q4242', root: true },
    { kind: 'bfifo', handle: '8001:', dev: 'nc-q4242', parent: '4e43:1' },
  ]);
  const found = await qdiscShapers(tc, 'fq');
  assert.deepEqual(found.map((entry) => entry.name), ['qdisc htb', 'qdisc clsact']);
  assert.match(found[0]!.detail, /eth2/);
  assert.deepEqual((await qdiscShapers(tc, 'fq_codel')).map((entry) => entry.name), ['qdisc fq', 'qdisc htb', 'qdisc clsact']);
  assert.deepEqual(await qdiscShapers('not json', 'fq_codel'), []);
});

test('cgroup programs: ours (nc_*) and device/sysctl programs are not shapers; others are', async () => {
  const bpftool = JSON.stringify([
    { id: 1, attach_type: 'cgroup_inet_egress', name: 'nc_egress' },
    { id: 2, attach_type: 'cgroup_inet_egress', name: 'other_shaper' },
    { id: 3, attach_type: 'cgroup_device', name: 'sd_devices' },
    { id: 4, attach_type: 'cgroup_inet4_connect', name: '' },
  ]);
  const found = await cgroupProgramShapers('/sys/fs/cgroup', bpftool);
  assert.deepEqual(found.map((entry) => entry.name), ['bpf other_shaper', 'bpf id 4']);
});

test('processes: trickle by name and by LD_PRELOAD', async (t) => {
  const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'netclamp-proc-'));
  t.after(() => fs.rmSync(proc, { recursive: true, force: true }));
  const fake = (pid: string, comm: string, environ: string[]) => {
    fs.mkdirSync(path.join(proc, pid));
    fs.writeFileSync(path.join(proc, pid, 'comm'), comm + '\n');
    fs.writeFileSync(path.join(proc, pid, 'environ'), environ.join('\0'));
  };
  fake('10', 'trickle', []);
  fake('11', 'curl', ['HOME=/root', 'LD_PRELOAD=/usr/lib/trickle/trickle-overload.so:/usr/lib/x86_64-linux-gnu/libtrickle.so']);
  fake('12', 'bash', ['LD_PRELOAD=/usr/lib/libjemalloc.so']);
  const found = await processShapers(proc);
  assert.deepEqual(found.map((entry) => entry.name).sort(), ['trickle', 'trickle']);
  assert.ok(found.some((entry) => /process 11 \(curl\) preloads libtrickle\.so/.test(entry.detail)));
});

test('/status lists what the engine reports as competing shapers', async (t) => {
  const { request, engine } = await startTestApp(t, { appOptions: { sampleIntervalMs: 0 } });
  engine.shapers = [{ name: 'qdisc htb', detail: 'htb qdisc on eth2 (handle 1:)' }];
  const status = (await request({ method: 'GET', url: '/api/v1/status' })).json() as { competing_shapers: unknown };
  assert.deepEqual(status.competing_shapers, [{ name: 'qdisc htb', detail: 'htb qdisc on eth2 (handle 1:)' }]);
});
