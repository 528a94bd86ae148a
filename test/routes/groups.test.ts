import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { assertProblem, makeDataDir, startTestApp, type TestApp } from '../helpers/app.js';
import { openFakeEngine } from '../helpers/fake-engine.js';
import type { BusEvent } from '../../lib/services/event-bus.js';
import { DATABASE_FILE } from '../../lib/store/database.js';

function bundle(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'work-blocks',
    name: 'Work blocks',
    version: '1',
    description: 'Blocks for office hours',
    rules: [
      { name: 'no games', app_path: '', action: 'BLOCK', remote_port: 27015, protocol: 'UDP' },
      { name: 'slow updates', app_path: '', action: 'LIMIT', rate_limit_down_bytes_per_sec: 1000 },
    ],
    quotas: [],
    ...overrides,
  };
}

function installed(engine: TestApp['engine']): Array<{ id: number; name: string }> {
  return [...engine.installed.keys()].sort((a, b) => a - b).map((id) => ({ id, name: '' }));
}

/** Rule ids in the engine, and the names of the stored rules they belong to. */
async function engineRuleNames(app: TestApp): Promise<string[]> {
  const rules = (await app.request({ method: 'GET', url: '/api/v1/rules' })).json() as Array<{ id: string; name: string }>;
  const byId = new Map(rules.map((rule) => [Number(rule.id), rule.name]));
  return installed(app.engine).map(({ id }) => byId.get(id) ?? `orphan ${id}`).sort();
}

function recordEvents(app: TestApp): BusEvent[] {
  const seen: BusEvent[] = [];
  app.app.netclamp.events.subscribe((event) => seen.push(event));
  return seen;
}

// ---- a subscription source on loopback ------------------------------------------------------------

type Handler = (request: http.IncomingMessage, response: http.ServerResponse) => void;

interface Source {
  base: string;
  /** Requests seen, with their If-None-Match. */
  requests: Array<{ url: string; ifNoneMatch: string | undefined }>;
  routes: Map<string, Handler>;
}

async function startSource(t: TestContext): Promise<Source> {
  const routes = new Map<string, Handler>();
  const requests: Source['requests'] = [];
  const server = http.createServer((request, response) => {
    requests.push({ url: request.url ?? '', ifNoneMatch: request.headers['if-none-match'] });
    const handler = routes.get(request.url ?? '');
    if (handler === undefined) {
      response.writeHead(404).end();
      return;
    }
    handler(request, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  const { port } = server.address() as AddressInfo;
  return { base: `http://127.0.0.1:${port}`, requests, routes };
}

/** Serves `body` with an ETag and answers 304 to a matching If-None-Match. */
function serveBundle(body: () => Record<string, unknown>, etag: () => string): Handler {
  return (request, response) => {
    if (request.headers['if-none-match'] === etag()) {
      response.writeHead(304, { etag: etag() }).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json', etag: etag() }).end(JSON.stringify(body()));
  };
}

// ---- install / list / uninstall -----------------------------------------------------------------

test('install: 201 with the group and Location; rules are owned, synced and in the engine; GET /groups lists it', async (t) => {
  const app = await startTestApp(t);
  const response = await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle() });
  assert.equal(response.statusCode, 201, response.body);
  assert.equal(response.headers.location, '/api/v1/groups/work-blocks');
  const group = response.json();
  assert.equal(group.id, 'work-blocks');
  assert.equal(group.name, 'Work blocks');
  assert.equal(group.version, '1');
  assert.equal(group.description, 'Blocks for office hours');
  assert.equal(group.source, 'manual');
  assert.deepEqual(group.quota_ids, []);
  assert.equal(group.rule_ids.length, 2);
  assert.match(group.installed_at, /^\d{4}-\d\d-\d\dT.*Z$/);

  const rules = (await app.request({ method: 'GET', url: '/api/v1/rules' })).json() as Array<Record<string, unknown>>;
  assert.deepEqual(rules.map((rule) => rule.id), group.rule_ids);
  for (const rule of rules) {
    assert.equal(rule.group_id, 'work-blocks');
    assert.equal(rule.sync_state, 'SYNCED');
    assert.ok(app.engine.installed.has(Number(rule.id)), `rule ${String(rule.id)} in the engine`);
  }
  assert.equal(rules[0]!.remote_port, 27015);
  assert.equal(rules[1]!.priority, 100, 'draft defaults are filled in');

  const list = await app.request({ method: 'GET', url: '/api/v1/groups' });
  assert.equal(list.statusCode, 200);
  assert.deepEqual(list.json(), { groups: [group], subscriptions: [] });
  const one = await app.request({ method: 'GET', url: '/api/v1/groups/work-blocks' });
  assert.deepEqual(one.json(), group);
  assertProblem(await app.request({ method: 'GET', url: '/api/v1/groups/nope' }), 404);
});

test('installing the same id again replaces it atomically: 200, and the engine holds exactly the new rules', async (t) => {
  const app = await startTestApp(t);
  const events = recordEvents(app);
  const first = (await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle() })).json();
  const own = await app.request({ method: 'POST', url: '/api/v1/rules', payload: { name: 'mine', app_path: '', action: 'ALLOW' } });
  assert.equal(own.statusCode, 201);

  const next = bundle({
    version: '2',
    rules: [
      { name: 'v2 a', app_path: '', action: 'BLOCK', remote_address: '192.0.2.0/24' },
      { name: 'v2 b', app_path: '', action: 'BLOCK', remote_port: 25 },
      { name: 'v2 c', app_path: '', action: 'ALLOW', priority: 5 },
    ],
  });
  const response = await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: next });
  assert.equal(response.statusCode, 200, response.body);
  const group = response.json();
  assert.equal(group.version, '2');
  assert.equal(group.rule_ids.length, 3);
  for (const id of first.rule_ids as string[]) assert.ok(!group.rule_ids.includes(id), 'old rule ids are gone');

  assert.deepEqual(await engineRuleNames(app), ['mine', 'v2 a', 'v2 b', 'v2 c']);
  for (const id of first.rule_ids as string[]) {
    assertProblem(await app.request({ method: 'GET', url: `/api/v1/rules/${id}` }), 404);
  }
  const list = (await app.request({ method: 'GET', url: '/api/v1/groups' })).json();
  assert.equal(list.groups.length, 1);
  assert.deepEqual(
    events.filter((event) => event.name === 'group_updated').map((event) => event.data),
    [
      { group_id: 'work-blocks', name: 'Work blocks', version: '1' },
      { group_id: 'work-blocks', name: 'Work blocks', version: '2' },
    ],
  );
});

test('invalid bundles: 400 naming the field, and nothing changes', async (t) => {
  const app = await startTestApp(t);
  const good = (await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle() })).json();
  const threeRules = (third: Record<string, unknown>): unknown[] => [
    { name: 'a', app_path: '', action: 'BLOCK' }, { name: 'b', app_path: '', action: 'BLOCK' }, third,
  ];
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [bundle({ version: '9', rules: threeRules({ name: 'c', app_path: '', action: 'BLOCK', remote_port: 70000 }) }), /rules\[2\]\.remote_port: must be <= 65535/],
    [bundle({ rules: threeRules({ name: 'c', app_path: '', action: 'LIMIT' }) }), /rules\[2\]\.rate_limit_down_bytes_per_sec: LIMIT needs/],
    [bundle({ rules: threeRules({ name: 'c', app_path: 'relative', action: 'BLOCK' }) }), /rules\[2\]\.app_path: must be empty/],
    [bundle({ rules: threeRules({ name: 'c', app_path: '', action: 'BLOCK', colour: 'red' }) }), /rules\[2\]\.colour: unknown field/],
    [bundle({ rules: threeRules({ name: 'c', app_path: '', action: 'DENY' }) }), /rules\[2\]\.action: must be one of/],
    [bundle({ id: 'Not A Slug' }), /id: /],
    [bundle({ id: undefined }), /id: is required/],
    [bundle({ version: '' }), /version: /],
    [bundle({ rules: undefined }), /rules: is required/],
    [bundle({ quotas: undefined }), /quotas: is required/],
    [bundle({ extra: 1 }), /extra: unknown field/],
    [bundle({ quotas: [{ name: 'q', app_path: '/usr/bin/curl' }] }), /quotas\[0\]\.limit_bytes: is required/],
    [bundle({ quotas: [{ name: 'q', app_path: '/usr/bin/curl', limit_bytes: 5, on_exceed: 'LIMIT' }] }), /quotas\[0\]\.limit_rate_bytes_per_sec: is required/],
  ];
  for (const [payload, expected] of cases) {
    const response = await app.request({ method: 'POST', url: '/api/v1/groups/install', payload });
    const problem = assertProblem(response, 400);
    assert.match(String(problem.detail), expected, JSON.stringify(payload));
  }
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/groups' })).json().groups, [good]);
  assert.equal(app.engine.installed.size, 2);
});

test('group-owned rules are read-only through /rules (409), and visible there', async (t) => {
  const app = await startTestApp(t);
  const group = (await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle() })).json();
  const id = group.rule_ids[0] as string;
  const put = await app.request({ method: 'PUT', url: `/api/v1/rules/${id}`, payload: { name: 'x', app_path: '', action: 'ALLOW' } });
  assert.match(String(assertProblem(put, 409).detail), /work-blocks/);
  assertProblem(await app.request({ method: 'DELETE', url: `/api/v1/rules/${id}` }), 409);
  const rule = (await app.request({ method: 'GET', url: `/api/v1/rules/${id}` })).json();
  assert.equal(rule.name, 'no games', 'the rule is unchanged');
  assert.ok(app.engine.installed.has(Number(id)));
});

test('DELETE /groups/{id}: 204, its rules leave the database and the engine; 404 when unknown', async (t) => {
  const app = await startTestApp(t);
  const group = (await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle() })).json();
  await app.request({ method: 'POST', url: '/api/v1/rules', payload: { name: 'mine', app_path: '', action: 'ALLOW' } });
  const response = await app.request({ method: 'DELETE', url: '/api/v1/groups/work-blocks' });
  assert.equal(response.statusCode, 204);
  assert.deepEqual(await engineRuleNames(app), ['mine']);
  for (const id of group.rule_ids as string[]) {
    assert.ok(!app.engine.installed.has(Number(id)));
    assertProblem(await app.request({ method: 'GET', url: `/api/v1/rules/${id}` }), 404);
  }
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/groups' })).json(), { groups: [], subscriptions: [] });
  assertProblem(await app.request({ method: 'DELETE', url: '/api/v1/groups/work-blocks' }), 404);
  assertProblem(await app.request({ method: 'DELETE', url: '/api/v1/groups/never' }), 404);
});

test('ENGINE_DOWN during a replace undoes the whole install (503): the old group and its rules stay', async (t) => {
  const app = await startTestApp(t);
  const first = (await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle() })).json();
  const rulesBefore = (await app.request({ method: 'GET', url: '/api/v1/rules' })).json();

  app.engine.dieDuringApply = true;
  const response = await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle({ version: '2' }) });
  const problem = assertProblem(response, 503);
  assert.ok(response.headers['retry-after'], 'Retry-After');
  assert.match(String(problem.detail), /nothing was changed/);

  const groups = (await app.request({ method: 'GET', url: '/api/v1/groups' })).json().groups;
  assert.deepEqual(groups, [first]);
  const rulesAfter = (await app.request({ method: 'GET', url: '/api/v1/rules' })).json();
  assert.deepEqual(
    rulesAfter.map((rule: Record<string, unknown>) => [rule.id, rule.name, rule.revision, rule.group_id]),
    rulesBefore.map((rule: Record<string, unknown>) => [rule.id, rule.name, rule.revision, rule.group_id]),
  );

  // Engine already down: refused before anything is written; uninstall too.
  app.engine.dieDuringApply = false;
  app.engine.goDown();
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle({ id: 'other' }) }), 503);
  assertProblem(await app.request({ method: 'DELETE', url: '/api/v1/groups/work-blocks' }), 503);
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/groups' })).json().groups, [first]);
});

// ---- subscriptions ------------------------------------------------------------------------------

test('subscribe: 400 for a non-https URL off loopback, another scheme, or interval_sec < 60', async (t) => {
  const app = await startTestApp(t);
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ url: 'http://example.com/bundle.json', interval_sec: 3600 }, /url: http is allowed only to a loopback host/],
    [{ url: 'ftp://127.0.0.1/bundle.json', interval_sec: 3600 }, /url: scheme ftp is not allowed/],
    [{ url: 'not a url', interval_sec: 3600 }, /url: must be an absolute URL/],
    [{ url: 'https://user:pw@example.com/b.json', interval_sec: 3600 }, /url: must not carry credentials/],
    [{ url: 'https://example.com/b.json', interval_sec: 59 }, /interval_sec: must be >= 60/],
    [{ url: 'https://example.com/b.json', interval_sec: 604801 }, /interval_sec: must be <= 604800/],
    [{ url: 'https://example.com/b.json' }, /interval_sec: is required/],
  ];
  for (const [payload, expected] of cases) {
    const problem = assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload }), 400);
    assert.match(String(problem.detail), expected);
  }
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/groups' })).json(), { groups: [], subscriptions: [] });
});

test('subscribe fetches at once (201), refresh reuses the ETag (304 keeps the group), a changed bundle replaces it', async (t) => {
  const app = await startTestApp(t);
  const events = recordEvents(app);
  const source = await startSource(t);
  let current = bundle();
  let etag = '"v1"';
  source.routes.set('/bundle.json', serveBundle(() => current, () => etag));
  const url = `${source.base}/bundle.json`;

  const response = await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url, interval_sec: 3600 } });
  assert.equal(response.statusCode, 201, response.body);
  assert.equal(response.headers.location, '/api/v1/groups/work-blocks');
  const body = response.json();
  assert.equal(body.changed, true);
  assert.equal(body.group.source, url);
  assert.equal(body.subscription.url, url);
  assert.equal(body.subscription.interval_sec, 3600);
  assert.equal(body.subscription.group_id, 'work-blocks');
  assert.equal(body.subscription.etag, '"v1"');
  assert.equal(body.subscription.last_error, null);
  assert.ok(body.subscription.last_fetch_at);
  assert.equal(app.engine.installed.size, 2);
  assert.equal(source.requests.length, 1);
  assert.equal(source.requests[0]!.ifNoneMatch, undefined);

  const listed = (await app.request({ method: 'GET', url: '/api/v1/groups' })).json();
  assert.deepEqual(listed.subscriptions, [body.subscription]);
  assert.deepEqual(listed.groups, [body.group]);

  // 304: nothing re-installed (same rule ids, counters not reset).
  const unchanged = await app.request({ method: 'POST', url: '/api/v1/groups/work-blocks/refresh' });
  assert.equal(unchanged.statusCode, 200, unchanged.body);
  assert.equal(unchanged.json().changed, false);
  assert.equal(source.requests[1]!.ifNoneMatch, '"v1"');
  assert.deepEqual(unchanged.json().group.rule_ids, body.group.rule_ids);

  // A duplicate subscription is a conflict; a manual install over a subscribed group too.
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url, interval_sec: 60 } }), 409);
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle() }), 409);

  current = bundle({ version: '2', rules: [{ name: 'only', app_path: '', action: 'BLOCK', remote_port: 23 }] });
  etag = '"v2"';
  const changed = await app.request({ method: 'POST', url: '/api/v1/groups/work-blocks/refresh' });
  assert.equal(changed.statusCode, 200, changed.body);
  assert.equal(changed.json().changed, true);
  assert.equal(changed.json().group.version, '2');
  assert.equal(changed.json().subscription.etag, '"v2"');
  assert.deepEqual(await engineRuleNames(app), ['only']);
  assert.deepEqual(
    events.filter((event) => event.name === 'group_updated').map((event) => (event.data as { version: string }).version),
    ['1', '2'],
  );

  // A server without ETags that re-sends the same bundle: no re-install.
  etag = '';
  const ids = changed.json().group.rule_ids;
  const same = await app.request({ method: 'POST', url: '/api/v1/groups/work-blocks/refresh' });
  assert.equal(same.json().changed, false);
  assert.deepEqual(same.json().group.rule_ids, ids);
});

test('refresh: 404 for an unknown group, 409 for a manually installed one', async (t) => {
  const app = await startTestApp(t);
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/nope/refresh' }), 404);
  await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle() });
  const problem = assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/work-blocks/refresh' }), 409);
  assert.match(String(problem.detail), /manually/);
});

test('a failed poll keeps the last good bundle, records last_error and emits group_error', async (t) => {
  const app = await startTestApp(t);
  const events = recordEvents(app);
  const source = await startSource(t);
  let failing = false;
  let current = bundle();
  const good = serveBundle(() => current, () => `"${String(current.version)}"`);
  source.routes.set('/b.json', (request, response) => {
    if (failing) response.writeHead(500).end('boom');
    else good(request, response);
  });
  const url = `${source.base}/b.json`;
  const created = (await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url, interval_sec: 60 } })).json();

  failing = true;
  const problem = assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/work-blocks/refresh' }), 502);
  assert.match(String(problem.detail), /answered 500/);
  const listed = (await app.request({ method: 'GET', url: '/api/v1/groups' })).json();
  assert.deepEqual(listed.groups, [created.group]);
  assert.match(listed.subscriptions[0].last_error, /answered 500/);
  assert.equal(app.engine.installed.size, 2);
  const errors = events.filter((event) => event.name === 'group_error');
  assert.equal(errors.length, 1);
  assert.deepEqual(errors[0]!.data, { group_id: 'work-blocks', detail: listed.subscriptions[0].last_error });

  // An invalid bundle is a failed poll too: named field, group kept.
  failing = false;
  current = bundle({ version: '3', rules: [{ name: 'x', app_path: '', action: 'BLOCK', remote_port: 99999 }] });
  const invalid = assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/work-blocks/refresh' }), 502);
  assert.match(String(invalid.detail), /rules\[0\]\.remote_port: must be <= 65535/);
  // An id change is refused.
  current = bundle({ id: 'someone-else', version: '4' });
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/work-blocks/refresh' }), 502);
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/groups' })).json().groups, [created.group]);
  assert.equal(events.filter((event) => event.name === 'group_error').length, 3);

  // Recovery clears last_error.
  current = bundle({ version: '5' });
  const ok = await app.request({ method: 'POST', url: '/api/v1/groups/work-blocks/refresh' });
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.json().subscription.last_error, null);
});

test('first fetch failures: too large (502), too slow (504), unreachable (502); no subscription is kept', async (t) => {
  const app = await startTestApp(t, { appOptions: { groupFetchLimits: { timeoutMs: 300, maxBytes: 4096 } } });
  const source = await startSource(t);
  source.routes.set('/big.json', (_request, response) => {
    // Chunked, no Content-Length: the cap must hold while reading.
    response.writeHead(200, { 'content-type': 'application/json' });
    response.write(`{"id":"big","pad":"${'x'.repeat(3000)}`);
    response.end(`${'y'.repeat(3000)}"}`);
  });
  source.routes.set('/declared-big.json', (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json', 'content-length': String(10_000) }).end('x'.repeat(10_000));
  });
  source.routes.set('/slow.json', (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/json' });
    response.write('{"id":');
    // The rest never comes within the timeout.
  });
  source.routes.set('/not-json', (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/plain' }).end('hello');
  });

  for (const name of ['/big.json', '/declared-big.json']) {
    const problem = assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url: `${source.base}${name}`, interval_sec: 60 } }), 502);
    assert.match(String(problem.detail), /bundle too large/);
  }
  const started = Date.now();
  const slow = assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url: `${source.base}/slow.json`, interval_sec: 60 } }), 504);
  assert.match(String(slow.detail), /within 300 ms/);
  assert.ok(Date.now() - started < 3000, 'the timeout bounds the wait');
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url: `${source.base}/not-json`, interval_sec: 60 } }), 502);
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url: `${source.base}/missing`, interval_sec: 60 } }), 502);
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url: 'http://127.0.0.1:1/closed', interval_sec: 60 } }), 502);
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/groups' })).json(), { groups: [], subscriptions: [] });
});

test('redirects: up to 3 are followed, a 4th is refused, and so is one to a URL that is not allowed', async (t) => {
  const app = await startTestApp(t);
  const source = await startSource(t);
  source.routes.set('/final.json', serveBundle(() => bundle(), () => '"r"'));
  const redirect = (to: string): http.RequestListener => (_request, response) => { response.writeHead(302, { location: to }).end(); };
  source.routes.set('/r1', redirect('/r2'));
  source.routes.set('/r2', redirect('/r3'));
  source.routes.set('/r3', redirect(`${source.base}/final.json`));
  source.routes.set('/r0', redirect('/r1'));
  source.routes.set('/away', redirect('http://example.com/bundle.json'));

  const tooMany = assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url: `${source.base}/r0`, interval_sec: 60 } }), 502);
  assert.match(String(tooMany.detail), /more than 3 redirects/);
  const away = assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url: `${source.base}/away`, interval_sec: 60 } }), 502);
  assert.match(String(away.detail), /redirect to http:\/\/example\.com\/bundle\.json refused/);
  assert.ok(!source.requests.some((request) => request.url === '/final.json'), 'nothing fetched so far');

  const ok = await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url: `${source.base}/r1`, interval_sec: 60 } });
  assert.equal(ok.statusCode, 201, ok.body);
  assert.equal(ok.json().subscription.url, `${source.base}/r1`, 'the subscription keeps the URL it was given');
});

test('subscriptions persist across restarts and polling resumes; uninstall removes the subscription', async (t) => {
  const dataDir = makeDataDir(t);
  const source = await startSource(t);
  let current = bundle();
  let etag = '"v1"';
  source.routes.set('/b.json', serveBundle(() => current, () => etag));
  const url = `${source.base}/b.json`;

  const first = await startTestApp(t, { dataDir });
  assert.equal((await first.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url, interval_sec: 60 } })).statusCode, 201);
  await first.close();

  // The last fetch is long past its interval: the restarted service polls at once.
  const db = new Database(path.join(dataDir, DATABASE_FILE));
  db.prepare('UPDATE subscriptions SET last_fetch_at = ?').run('2020-01-01T00:00:00.000Z');
  db.close();
  current = bundle({ version: '7', rules: [{ name: 'after restart', app_path: '', action: 'BLOCK' }] });
  etag = '"v7"';

  const engine = await openFakeEngine();
  const second = await startTestApp(t, { dataDir, engine });
  const deadline = Date.now() + 5000;
  let listed = (await second.request({ method: 'GET', url: '/api/v1/groups' })).json();
  while (listed.groups[0]?.version !== '7' && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    listed = (await second.request({ method: 'GET', url: '/api/v1/groups' })).json();
  }
  assert.equal(listed.groups[0]?.version, '7', 'polled after the restart');
  assert.equal(listed.subscriptions.length, 1);
  assert.equal(listed.subscriptions[0].etag, '"v7"');
  assert.equal(source.requests.at(-1)!.ifNoneMatch, '"v1"', 'the stored ETag was offered');
  assert.deepEqual(await engineRuleNames(second), ['after restart']);

  assert.equal((await second.request({ method: 'DELETE', url: '/api/v1/groups/work-blocks' })).statusCode, 204);
  assert.deepEqual((await second.request({ method: 'GET', url: '/api/v1/groups' })).json(), { groups: [], subscriptions: [] });
  assert.equal(engine.installed.size, 0);
});

test('bundle quotas: installed with the group (quota_ids, read-only through /quotas), carried over by a replace, removed by uninstall', async (t) => {
  const app = await startTestApp(t);
  const quota = { name: 'curl monthly', app_path: '/usr/bin/curl', limit_bytes: 1000, period: 'MONTHLY', on_exceed: 'BLOCK' };
  const response = await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle({ quotas: [quota] }) });
  assert.equal(response.statusCode, 201, response.body);
  const group = response.json();
  assert.equal(group.quota_ids.length, 1);
  const quotaId = group.quota_ids[0] as string;
  const stored = (await app.request({ method: 'GET', url: `/api/v1/quotas/${quotaId}` })).json();
  assert.equal(stored.group_id, 'work-blocks');
  assert.equal(stored.limit_bytes, 1000);
  assertProblem(await app.request({ method: 'DELETE', url: `/api/v1/quotas/${quotaId}` }), 409);

  // Simulate counted usage, then a new version that raises the limit: the count is not forgiven.
  const db = new Database(path.join(app.dataDir, DATABASE_FILE));
  t.after(() => db.close());
  db.prepare('UPDATE quotas SET used_bytes = 400 WHERE id = ?').run(Number(quotaId));
  const replaced = await app.request({
    method: 'POST', url: '/api/v1/groups/install',
    payload: bundle({ version: '2', quotas: [{ ...quota, limit_bytes: 5000 }, { ...quota, name: 'new one' }] }),
  });
  assert.equal(replaced.statusCode, 200, replaced.body);
  const ids = replaced.json().quota_ids as string[];
  assert.equal(ids.length, 2);
  const quotas = (await app.request({ method: 'GET', url: '/api/v1/quotas' })).json() as Array<Record<string, unknown>>;
  assert.deepEqual(quotas.map((entry) => entry.id).sort(), [...ids].sort());
  const carried = quotas.find((entry) => entry.name === 'curl monthly')!;
  assert.equal(carried.limit_bytes, 5000);
  assert.equal(carried.used_bytes, 400);
  assert.equal(quotas.find((entry) => entry.name === 'new one')!.used_bytes, 0);

  // ENGINE_DOWN during the next replace restores the quotas too.
  app.engine.dieDuringApply = true;
  assertProblem(await app.request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle({ version: '3', quotas: [] }) }), 503);
  const kept = (await app.request({ method: 'GET', url: '/api/v1/quotas' })).json() as Array<Record<string, unknown>>;
  assert.deepEqual(kept.map((entry) => entry.id).sort(), [...ids].sort());
  app.engine.dieDuringApply = false;
  await app.engine.open();

  assert.equal((await app.request({ method: 'DELETE', url: '/api/v1/groups/work-blocks' })).statusCode, 204);
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/quotas' })).json(), []);
});

test('an uninstall while a poll is in flight wins: the poll does not bring the group or subscription back', async (t) => {
  const app = await startTestApp(t);
  const source = await startSource(t);
  let delayMs = 0;
  let current = bundle();
  const serve = serveBundle(() => current, () => `"${String(current.version)}"`);
  source.routes.set('/b.json', (request, response) => { setTimeout(() => serve(request, response), delayMs); });
  const url = `${source.base}/b.json`;
  assert.equal((await app.request({ method: 'POST', url: '/api/v1/groups/subscribe', payload: { url, interval_sec: 60 } })).statusCode, 201);

  delayMs = 300;
  current = bundle({ version: '2' });
  const polling = app.request({ method: 'POST', url: '/api/v1/groups/work-blocks/refresh' });
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal((await app.request({ method: 'DELETE', url: '/api/v1/groups/work-blocks' })).statusCode, 204);
  assertProblem(await polling, 404);
  assert.deepEqual((await app.request({ method: 'GET', url: '/api/v1/groups' })).json(), { groups: [], subscriptions: [] });
  assert.equal(app.engine.installed.size, 0);
});
