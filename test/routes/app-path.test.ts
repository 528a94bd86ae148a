import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { draft, makeDataDir, startTestApp, type TestApp } from '../helpers/app.js';

/** Polls the API (the test's side, not the service's) until the rule reaches a state or time runs out. */
async function waitForRule(app: TestApp, id: string, predicate: (rule: Record<string, unknown>) => boolean, what: string): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 5000;
  let rule: Record<string, unknown> = {};
  while (Date.now() < deadline) {
    rule = (await app.request({ method: 'GET', url: `/api/v1/rules/${id}` })).json();
    if (predicate(rule)) return rule;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`rule ${id} never became ${what}: ${JSON.stringify(rule)}`);
}

test('a rule for a missing file is PENDING with a clear reason and syncs by itself when the file appears', async (t) => {
  const app = await startTestApp(t);
  const root = makeDataDir(t);
  const appPath = path.join(root, 'opt', 'vendor', 'bin', 'tool'); // three directories do not exist yet
  const response = await app.request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: appPath }) });
  assert.equal(response.statusCode, 201);
  const created = response.json();
  assert.equal(created.sync_state, 'PENDING');
  assert.equal(created.sync_error, `app_path does not exist: ${appPath}; the rule will sync when the file appears`);
  assert.equal(app.engine.installed.has(Number(created.id)), false);

  fs.mkdirSync(path.dirname(appPath), { recursive: true });
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal((await app.request({ method: 'GET', url: `/api/v1/rules/${created.id}` })).json().sync_state, 'PENDING');
  fs.writeFileSync(appPath, '#!/bin/sh\n', { mode: 0o755 });
  const synced = await waitForRule(app, created.id, (rule) => rule.sync_state === 'SYNCED', 'SYNCED');
  assert.equal(synced.sync_error, null);
  assert.equal(synced.revision, 1);
  assert.equal(app.engine.installed.get(Number(created.id))?.rule.appPath, appPath);
});

test('an EXACT_PATH rule follows its file when it is replaced by a rename (an upgrade)', async (t) => {
  const app = await startTestApp(t);
  const root = makeDataDir(t);
  const appPath = path.join(root, 'app');
  fs.writeFileSync(appPath, 'v1');
  const created = (await app.request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: appPath }) })).json();
  assert.equal(created.sync_state, 'SYNCED');
  const applies = (): number => app.engine.calls.filter((call) => call === `apply ${created.id}`).length;
  assert.equal(applies(), 1);

  fs.writeFileSync(path.join(root, 'app.new'), 'v2');
  fs.renameSync(path.join(root, 'app.new'), appPath);
  const deadline = Date.now() + 5000;
  while (applies() < 2 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25));
  assert.equal(applies(), 2, 're-applied after the rename');
  assert.equal(app.engine.installed.get(Number(created.id))?.rule.resetCounters, false, 'not an edit of the rule');

  // Removed: the rule goes back to waiting; back again: synced again.
  fs.rmSync(appPath);
  await waitForRule(app, created.id, (rule) => rule.sync_state === 'PENDING', 'PENDING');
  fs.writeFileSync(appPath, 'v3');
  await waitForRule(app, created.id, (rule) => rule.sync_state === 'SYNCED', 'SYNCED again');
});

test('a waiting rule that is disabled stays DISABLED when its file appears', async (t) => {
  const app = await startTestApp(t);
  const root = makeDataDir(t);
  const appPath = path.join(root, 'later');
  const created = (await app.request({ method: 'POST', url: '/api/v1/rules', payload: draft({ app_path: appPath }) })).json();
  assert.equal(created.sync_state, 'PENDING');
  await app.request({ method: 'PUT', url: `/api/v1/rules/${created.id}`, payload: draft({ app_path: appPath, enabled: false }) });
  fs.writeFileSync(appPath, 'x');
  await new Promise((resolve) => setTimeout(resolve, 400));
  const rule = (await app.request({ method: 'GET', url: `/api/v1/rules/${created.id}` })).json();
  assert.equal(rule.sync_state, 'DISABLED');
  assert.equal(app.engine.installed.size, 0);
});

test('an unexpected failure is a 500 problem that hides internals and is logged to service.log', async (t) => {
  const dataDir = makeDataDir(t);
  const app = await startTestApp(t, { dataDir });
  app.engine.installedRules = async () => {
    throw new TypeError('secret internal detail at 0xdeadbeef');
  };
  const response = await app.request({ method: 'POST', url: '/api/v1/rules/reconcile' });
  assert.equal(response.statusCode, 500);
  assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
  assert.doesNotMatch(response.body, /secret|deadbeef|TypeError/);
  const log = fs.readFileSync(path.join(dataDir, 'service.log'), 'utf8');
  assert.match(log, /secret internal detail at 0xdeadbeef/);
});
