import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { assertProblem, draft, makeDataDir, startTestApp } from '../helpers/app.js';
import { openFakeEngine } from '../helpers/fake-engine.js';
import { fingerprintOf } from '../../lib/engine/engine.js';

const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

test('POST /rules creates: 201, Location, ETag, defaults filled, synced into the engine', async (t) => {
  const { request, engine } = await startTestApp(t);
  const response = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: '/bin/sh' }) });
  assert.equal(response.statusCode, 201);
  const rule = response.json();
  assert.equal(typeof rule.id, 'string');
  assert.equal(response.headers.location, `/api/v1/rules/${rule.id}`);
  assert.equal(response.headers.etag, '"1"');
  assert.deepEqual(
    { ...rule, id: undefined, created_at: undefined, updated_at: undefined },
    {
      id: undefined, created_at: undefined, updated_at: undefined,
      name: 'Block everything', app_path: '/bin/sh', action: 'BLOCK', direction: 'BOTH', remote_address: '',
      remote_port: 0, protocol: 'ANY', rate_limit_down_bytes_per_sec: null, rate_limit_up_bytes_per_sec: null,
      limit_scope: 'PER_APP', match_mode: 'EXACT_PATH', priority: 100, enabled: true, revision: 1,
      sync_state: 'SYNCED', sync_error: null, group_id: null, bytes_up: 0, bytes_down: 0, blocked_count: 0,
    },
  );
  assert.match(rule.created_at, ISO_UTC);
  assert.equal(rule.created_at, rule.updated_at);
  const installed = engine.installed.get(Number(rule.id));
  assert.ok(installed, 'rule is in the engine');
  assert.equal(installed.rule.appPath, '/bin/sh');
  assert.equal(installed.rule.resetCounters, true);

  const fetched = await request({ method: 'GET', url: response.headers.location! });
  assert.equal(fetched.statusCode, 200);
  assert.equal(fetched.headers.etag, '"1"');
  assert.deepEqual(fetched.json(), rule);
  const list = await request({ method: 'GET', url: '/api/v1/rules' });
  assert.equal(list.statusCode, 200);
  assert.deepEqual(list.json(), [rule]);
});

test('a LIMIT rule with every field set round-trips, and IPv6 / CIDR addresses are accepted', async (t) => {
  const { request, engine } = await startTestApp(t);
  const full = {
    name: 'Clamp', app_path: '/usr/bin', action: 'LIMIT', direction: 'OUTBOUND', remote_address: '2001:db8::/32',
    remote_port: 443, protocol: 'TCP', rate_limit_down_bytes_per_sec: null, rate_limit_up_bytes_per_sec: 1000,
    limit_scope: 'PER_CONNECTION', match_mode: 'DIRECTORY', priority: 10000, enabled: true,
  };
  const response = await request({ method: 'POST', url: '/api/v1/rules', payload: full });
  assert.equal(response.statusCode, 201, response.body);
  const rule = response.json();
  for (const [key, value] of Object.entries(full)) assert.deepEqual(rule[key], value, key);
  assert.equal(engine.installed.get(Number(rule.id))?.rule.rateUpBytesPerSec, 1000);
  for (const remote_address of ['10.0.0.0/8', '192.0.2.1', '::1', '0.0.0.0/0', '::/0', '10.1.2.3/32']) {
    const ok = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ remote_address }) });
    assert.equal(ok.statusCode, 201, remote_address);
  }
});

test('400 names the offending field', async (t) => {
  const { request } = await startTestApp(t);
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [draft({ colour: 'red' }), 'colour', /unknown field/],
    [draft({ remote_port: 70000 }), 'remote_port', /<= 65535/],
    [draft({ remote_port: -1 }), 'remote_port', />= 0/],
    [draft({ action: 'LIMIT' }), 'rate_limit_down_bytes_per_sec', /at least one/],
    [draft({ action: 'BLOCK', rate_limit_up_bytes_per_sec: 5 }), 'rate_limit_up_bytes_per_sec', /must be null/],
    [draft({ action: 'LIMIT', rate_limit_up_bytes_per_sec: 0 }), 'rate_limit_up_bytes_per_sec', />= 1/],
    [draft({ app_path: 'relative/app' }), 'app_path', /absolute/],
    [draft({ remote_address: '10.0.0.0/33' }), 'remote_address', /CIDR/],
    [draft({ remote_address: '2001:db8::/129' }), 'remote_address', /CIDR/],
    [draft({ remote_address: 'example.com' }), 'remote_address', /address/],
    [draft({ remote_address: '10.0.0.0/' }), 'remote_address', /CIDR/],
    [draft({ priority: 10001 }), 'priority', /<= 10000/],
    [draft({ action: 'DENY' }), 'action', /one of "ALLOW", "BLOCK", "LIMIT"/],
    [draft({ protocol: 'ICMP', remote_port: 80 }), 'remote_port', /ICMP/],
    [draft({ enabled: 'yes' }), 'enabled', /boolean/],
    [draft({ remote_port: '80' }), 'remote_port', /integer/],
    [draft({ revision: 3 }), 'revision', /unknown field/],
    [{ app_path: '', action: 'BLOCK' }, 'name', /required/],
  ];
  for (const [payload, field, message] of cases) {
    const response = await request({ method: 'POST', url: '/api/v1/rules', payload });
    const problem = assertProblem(response, 400);
    assert.match(String(problem.detail), new RegExp(`^${field}: |; ${field}: `), `${JSON.stringify(payload)}: ${String(problem.detail)}`);
    const errors = problem.errors as Array<{ field: string; message: string }>;
    const entry = errors.find((e) => e.field === field);
    assert.ok(entry, `errors name ${field}: ${response.body}`);
    assert.match(entry.message, message, `${field}: ${entry.message}`);
  }
  const list = await request({ method: 'GET', url: '/api/v1/rules' });
  assert.deepEqual(list.json(), [], 'no invalid draft was stored');
});

test('404 for unknown and malformed ids on every rule route', async (t) => {
  const { request } = await startTestApp(t);
  for (const id of ['999', 'abc', '0', '99999999999']) {
    assertProblem(await request({ method: 'GET', url: `/api/v1/rules/${id}` }), 404);
    assertProblem(await request({ method: 'PUT', url: `/api/v1/rules/${id}`, payload: draft() }), 404);
    assertProblem(await request({ method: 'DELETE', url: `/api/v1/rules/${id}` }), 404);
    assertProblem(await request({ method: 'POST', url: `/api/v1/rules/${id}/retry` }), 404);
  }
});

test('PUT replaces: 200, revision +1, new ETag, counters restart; PUT without a condition is unconditional', async (t) => {
  const { request, engine } = await startTestApp(t);
  const created = (await request({ method: 'POST', url: '/api/v1/rules', payload: draft() })).json();
  const id = Number(created.id);
  engine.addTraffic(id, { up: 100, down: 200, blocked: 3 });
  const counted = (await request({ method: 'GET', url: `/api/v1/rules/${id}` })).json();
  assert.deepEqual([counted.bytes_up, counted.bytes_down, counted.blocked_count], [100, 200, 3]);

  const response = await request({ method: 'PUT', url: `/api/v1/rules/${id}`, payload: draft({ name: 'Renamed', priority: 5 }) });
  assert.equal(response.statusCode, 200, response.body);
  const updated = response.json();
  assert.equal(updated.revision, 2);
  assert.equal(response.headers.etag, '"2"');
  assert.equal(updated.name, 'Renamed');
  assert.equal(updated.priority, 5);
  assert.equal(updated.created_at, created.created_at);
  assert.ok(updated.updated_at >= created.updated_at);
  assert.equal(engine.installed.get(id)?.rule.priority, 5);
  assert.equal(engine.installed.get(id)?.rule.resetCounters, true);
  const after = (await request({ method: 'GET', url: `/api/v1/rules/${id}` })).json();
  assert.deepEqual([after.bytes_up, after.bytes_down, after.blocked_count], [0, 0, 0]);
  // Omitted fields go back to their defaults: a PUT is a replace, not a patch.
  const replaced = (await request({ method: 'PUT', url: `/api/v1/rules/${id}`, payload: draft() })).json();
  assert.equal(replaced.priority, 100);
  assert.equal(replaced.revision, 3);
});

test('409 for a stale If-Match or a stale body revision; current ones succeed', async (t) => {
  const { request } = await startTestApp(t);
  const created = (await request({ method: 'POST', url: '/api/v1/rules', payload: draft() })).json();
  const url = `/api/v1/rules/${created.id}`;
  assert.equal((await request({ method: 'PUT', url, payload: draft({ name: 'two' }) })).statusCode, 200);

  const staleHeader = await request({ method: 'PUT', url, payload: draft({ name: 'x' }), headers: { 'if-match': '"1"' } });
  assertProblem(staleHeader, 409);
  const staleBody = await request({ method: 'PUT', url, payload: draft({ name: 'x', revision: 1 }) });
  assertProblem(staleBody, 409);
  const unchanged = (await request({ method: 'GET', url })).json();
  assert.equal(unchanged.name, 'two');
  assert.equal(unchanged.revision, 2);

  const byHeader = await request({ method: 'PUT', url, payload: draft({ name: 'three' }), headers: { 'if-match': '"2"' } });
  assert.equal(byHeader.statusCode, 200, byHeader.body);
  const byBody = await request({ method: 'PUT', url, payload: draft({ name: 'four', revision: 3 }) });
  assert.equal(byBody.statusCode, 200, byBody.body);
  assert.equal(byBody.json().revision, 4);
  assert.equal('revision' in draft(), false);
});

test('DELETE: 204 and the rule leaves the database and the engine', async (t) => {
  const { request, engine } = await startTestApp(t);
  const created = (await request({ method: 'POST', url: '/api/v1/rules', payload: draft() })).json();
  const response = await request({ method: 'DELETE', url: `/api/v1/rules/${created.id}` });
  assert.equal(response.statusCode, 204);
  assert.equal(response.body, '');
  assert.equal(engine.installed.has(Number(created.id)), false);
  assertProblem(await request({ method: 'GET', url: `/api/v1/rules/${created.id}` }), 404);
});

test('a disabled rule is DISABLED and not in the engine; enabling it syncs it', async (t) => {
  const { request, engine } = await startTestApp(t);
  const created = (await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ enabled: false }) })).json();
  assert.equal(created.sync_state, 'DISABLED');
  assert.equal(engine.installed.size, 0);
  const enabled = (await request({ method: 'PUT', url: `/api/v1/rules/${created.id}`, payload: draft() })).json();
  assert.equal(enabled.sync_state, 'SYNCED');
  assert.equal(engine.installed.size, 1);
  const disabled = (await request({ method: 'PUT', url: `/api/v1/rules/${created.id}`, payload: draft({ enabled: false }) })).json();
  assert.equal(disabled.sync_state, 'DISABLED');
  assert.equal(engine.installed.size, 0);
});

test('an engine error other than ENOENT stores the rule as ERROR with the message; retry re-syncs it', async (t) => {
  const { request, engine } = await startTestApp(t);
  engine.applyFailure = { code: 'EPERM', message: 'operation not permitted' };
  const response = await request({ method: 'POST', url: '/api/v1/rules', payload: draft() });
  assert.equal(response.statusCode, 201);
  const rule = response.json();
  assert.equal(rule.sync_state, 'ERROR');
  assert.match(rule.sync_error, /EPERM: operation not permitted/);

  engine.applyFailure = null;
  const retried = await request({ method: 'POST', url: `/api/v1/rules/${rule.id}/retry` });
  assert.equal(retried.statusCode, 200);
  assert.equal(retried.json().sync_state, 'SYNCED');
  assert.equal(retried.json().sync_error, null);
  assert.equal(retried.json().revision, 1, 'a retry is not an edit');
  assert.ok(engine.installed.has(Number(rule.id)));
});

test('503 with Retry-After on writes while the engine is down, and nothing changes; reads keep working', async (t) => {
  const { request, engine } = await startTestApp(t);
  const kept = (await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'kept' }) })).json();
  const before = (await request({ method: 'GET', url: '/api/v1/rules' })).json();
  engine.goDown();
  const url = `/api/v1/rules/${kept.id}`;
  const writes = [
    { method: 'POST' as const, url: '/api/v1/rules', payload: draft() },
    { method: 'PUT' as const, url, payload: draft({ name: 'changed' }) },
    { method: 'DELETE' as const, url },
    { method: 'POST' as const, url: `${url}/retry` },
    { method: 'POST' as const, url: '/api/v1/rules/reconcile' },
  ];
  for (const write of writes) {
    const response = await request(write);
    assertProblem(response, 503);
    assert.match(String(response.headers['retry-after']), /^\d+$/, `${write.method} ${write.url}`);
  }
  const after = await request({ method: 'GET', url: '/api/v1/rules' });
  assert.equal(after.statusCode, 200);
  assert.deepEqual(after.json(), before);
  assert.equal((await request({ method: 'GET', url: '/api/v1/status' })).statusCode, 200);
});

test('when the engine dies in the middle of a write, the database change is undone', async (t) => {
  const { request, engine } = await startTestApp(t);
  const kept = (await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'kept' }) })).json();
  const before = (await request({ method: 'GET', url: '/api/v1/rules' })).json();
  engine.dieDuringApply = true;
  assertProblem(await request({ method: 'POST', url: '/api/v1/rules', payload: draft() }), 503);
  await engine.open();
  engine.dieDuringApply = true;
  assertProblem(await request({ method: 'PUT', url: `/api/v1/rules/${kept.id}`, payload: draft({ name: 'new' }) }), 503);
  await engine.open();
  engine.dieDuringApply = false;
  const after = (await request({ method: 'GET', url: '/api/v1/rules' })).json();
  assert.deepEqual(after, before);
});

test('a disabled rule can be created while the engine is down (the engine is not needed)', async (t) => {
  const { request, engine } = await startTestApp(t);
  engine.goDown();
  const response = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ enabled: false }) });
  assert.equal(response.statusCode, 201);
  assert.equal(response.json().sync_state, 'DISABLED');
});

test('rules owned by a group cannot be changed or deleted through /rules: 409', async (t) => {
  const first = await startTestApp(t);
  const created = (await first.request({ method: 'POST', url: '/api/v1/rules', payload: draft() })).json();
  await first.close();
  // Made a group's rule behind the service's back, so it is started again to read the table afresh.
  const db = new Database(path.join(first.dataDir, 'netclamp.db'));
  db.prepare('UPDATE rules SET group_id = ? WHERE id = ?').run('corp-baseline', Number(created.id));
  db.close();
  const { request } = await startTestApp(t, { dataDir: first.dataDir });
  const url = `/api/v1/rules/${created.id}`;
  assert.equal((await request({ method: 'GET', url })).json().group_id, 'corp-baseline');
  assertProblem(await request({ method: 'PUT', url, payload: draft({ name: 'mine now' }) }), 409);
  assertProblem(await request({ method: 'DELETE', url }), 409);
  assert.equal((await request({ method: 'GET', url })).json().name, 'Block everything');
});

test('reconcile repairs both ways: re-applies missing and altered rules, removes what no rule owns', async (t) => {
  const { request, engine } = await startTestApp(t);
  const ids: number[] = [];
  for (let i = 0; i < 4; i++) {
    ids.push(Number((await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ priority: i }) })).json().id));
  }
  const disabled = Number((await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ enabled: false }) })).json().id);
  engine.dropInstalled(ids[0]!);
  engine.installForeign(ids[1]!, { priority: 9999 }); // same id, different content
  engine.installForeign(4242); // nobody's rule
  engine.installForeign(disabled); // a disabled rule left in the kernel
  const response = await request({ method: 'POST', url: '/api/v1/rules/reconcile' });
  assert.equal(response.statusCode, 200);
  assert.deepEqual(response.json(), { checked: 5, repaired: 2, removed: 2, errors: 0 });
  assert.deepEqual([...engine.installed.keys()].sort((a, b) => a - b), ids);
  const list = (await request({ method: 'GET', url: '/api/v1/rules' })).json() as Array<Record<string, unknown>>;
  for (const rule of list) {
    const id = Number(rule.id);
    if (id === disabled) continue;
    const installed = engine.installed.get(id)!;
    assert.equal(installed.fingerprint, fingerprintOf(installed.rule));
    assert.equal(installed.rule.priority, rule.priority);
  }
  const again = await request({ method: 'POST', url: '/api/v1/rules/reconcile' });
  assert.deepEqual(again.json(), { checked: 5, repaired: 0, removed: 0, errors: 0 });
});

test('rules persist across a restart and are re-applied to the new engine', async (t) => {
  const dataDir = makeDataDir(t);
  const first = await startTestApp(t, { dataDir });
  const a = (await first.request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'a' }) })).json();
  const b = (await first.request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'b', enabled: false }) })).json();
  await first.request({ method: 'PUT', url: `/api/v1/rules/${a.id}`, payload: draft({ name: 'a2' }) });
  const before = (await first.request({ method: 'GET', url: '/api/v1/rules' })).json();
  await first.close();

  const engine = await openFakeEngine();
  engine.installForeign(777); // left over in the kernel from before: swept at start-up
  const second = await startTestApp(t, { dataDir, engine });
  const after = (await second.request({ method: 'GET', url: '/api/v1/rules' })).json();
  assert.deepEqual(after, before);
  assert.deepEqual([...engine.installed.keys()], [Number(a.id)]);
  assert.equal(engine.installed.get(Number(a.id))?.rule.resetCounters, true);
  const c = (await second.request({ method: 'POST', url: '/api/v1/rules', payload: draft({ name: 'c' }) })).json();
  assert.ok(Number(c.id) > Number(b.id), 'ids are never reused');
});

test('rules of a service started without an engine are PENDING with the reason', async (t) => {
  const dataDir = makeDataDir(t);
  const first = await startTestApp(t, { dataDir });
  await first.request({ method: 'POST', url: '/api/v1/rules', payload: draft() });
  await first.close();
  const engine = await openFakeEngine();
  engine.state = 'UNAVAILABLE';
  const second = await startTestApp(t, { dataDir, engine });
  const [rule] = (await second.request({ method: 'GET', url: '/api/v1/rules' })).json();
  assert.equal(rule.sync_state, 'PENDING');
  assert.match(rule.sync_error, /UNAVAILABLE/);
});

test('two concurrent PUTs with the same If-Match: exactly one wins, the other gets 409', async (t) => {
  const { request } = await startTestApp(t);
  const created = (await request({ method: 'POST', url: '/api/v1/rules', payload: draft() })).json();
  const url = `/api/v1/rules/${created.id}`;
  const [a, b] = await Promise.all([
    request({ method: 'PUT', url, payload: draft({ name: 'a' }), headers: { 'if-match': '"1"' } }),
    request({ method: 'PUT', url, payload: draft({ name: 'b' }), headers: { 'if-match': '"1"' } }),
  ]);
  assert.deepEqual([a.statusCode, b.statusCode].sort(), [200, 409]);
  const winner = a.statusCode === 200 ? 'a' : 'b';
  const rule = (await request({ method: 'GET', url })).json();
  assert.equal(rule.name, winner);
  assert.equal(rule.revision, 2);
  const any = await request({ method: 'PUT', url, payload: draft({ name: 'c' }), headers: { 'if-match': '*' } });
  assert.equal(any.statusCode, 200);
});
