/**
 * remote_address forms the data planes refuse (Linux inet_pton, the Windows WFP planner) are a 400 up
 * front, for /rules and for group bundles, instead of a stored rule in sync_state ERROR.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertProblem, draft, startTestApp } from '../helpers/app.js';

const REFUSED: Array<[string, RegExp]> = [
  ['fe80::1%eth0', /zone id/],
  ['fe80::1%1', /zone id/],
  ['fe80::1%eth0/64', /zone id/],
  ['::ffff:192.0.2.1', /hex groups/],
  ['64:ff9b::192.0.2.1/96', /hex groups/],
  ['10.0.0.0/08', /prefix length/],
  ['2001:db8::/064', /prefix length/],
];

test('remote_address: zone ids, dotted IPv6 and zero-padded prefixes are a 400 naming remote_address; nothing is stored', async (t) => {
  const { request, engine } = await startTestApp(t);
  for (const [remote_address, reason] of REFUSED) {
    const problem = assertProblem(await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ remote_address }) }), 400);
    assert.match(String(problem.detail), /^remote_address: /, remote_address);
    assert.match(String(problem.detail), reason, remote_address);
  }
  assert.deepEqual((await request({ method: 'GET', url: '/api/v1/rules' })).json(), []);
  assert.equal(engine.installed.size, 0);
  // The spellings both engines take still pass.
  for (const remote_address of ['fe80::1', '::ffff:c000:201', '10.0.0.0/0', '2001:db8::/64', '1:2:3:4:5:6:7::']) {
    const response = await request({ method: 'POST', url: '/api/v1/rules', payload: draft({ remote_address }) });
    assert.equal(response.statusCode, 201, `${remote_address}: ${response.body}`);
  }
});

test('remote_address: a PUT and a group bundle refuse the same forms', async (t) => {
  const { request } = await startTestApp(t);
  const created = (await request({ method: 'POST', url: '/api/v1/rules', payload: draft() })).json() as { id: string };
  const put = await request({ method: 'PUT', url: `/api/v1/rules/${created.id}`, payload: draft({ remote_address: 'fe80::1%eth0' }) });
  assert.match(String(assertProblem(put, 400).detail), /^remote_address: .*zone id/);
  const bundle = {
    id: 'zones', name: 'Zones', version: '1', quotas: [],
    rules: [{ name: 'a', app_path: '', action: 'BLOCK' }, { name: 'b', app_path: '', action: 'BLOCK', remote_address: 'fe80::1%1' }],
  };
  const install = await request({ method: 'POST', url: '/api/v1/groups/install', payload: bundle });
  assert.match(String(assertProblem(install, 400).detail), /rules\[1\]\.remote_address: .*zone id/);
  assert.deepEqual((await request({ method: 'GET', url: '/api/v1/groups' })).json().groups, []);
});
