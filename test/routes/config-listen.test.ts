/**
 * GET /config shows the address the service really listens on (--listen, a port the OS chose), and a PUT
 * naming that address is no change for the listener (it used to be a 400 EADDRINUSE: the service tried to
 * bind the address it already held).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeDataDir } from '../helpers/app.js';
import { openFakeEngine } from '../helpers/fake-engine.js';
import { plainRequest } from '../helpers/sse.js';
import { serve } from '../../lib/server.js';
import type { BusEvent } from '../../lib/services/event-bus.js';

interface ConfigBody { server: { listen: string }; log: { level: string } }

test('--listen: GET /config shows it, a PUT naming it keeps the listener, a file edit of other keys keeps it', async (t) => {
  const dataDir = makeDataDir(t);
  const server = await serve({ dataDir, listen: '127.0.0.1:0', engineFactory: openFakeEngine });
  t.after(() => server.close());
  const auth = { authorization: `Bearer ${fs.readFileSync(path.join(dataDir, 'auth.token'), 'utf8').trim()}` };
  const live = server.url.replace('http://', '');
  assert.match(live, /^127\.0\.0\.1:\d+$/);
  assert.notEqual(live, '127.0.0.1:0');
  const configFile = path.join(dataDir, 'config.toml');
  const fileBefore = fs.readFileSync(configFile, 'utf8');

  const shown = await plainRequest(`${server.url}/api/v1/config`, { headers: auth });
  assert.equal(shown.json<ConfigBody>().server.listen, live, 'the effective address, not config.toml\'s default');
  assert.equal(fs.readFileSync(configFile, 'utf8'), fileBefore, 'GET rewrites nothing');

  // An edit of config.toml that leaves its [server] listen alone does not undo --listen.
  const seen: BusEvent[] = [];
  server.app.netclamp.events.subscribe((event: BusEvent) => seen.push(event));
  fs.writeFileSync(configFile, '[log]\nlevel = "warn"\n');
  const started = Date.now();
  while (!seen.some((event) => event.name === 'config_reloaded' || event.name === 'config_error')) {
    if (Date.now() - started > 5000) throw new Error('no config_reloaded after the edit');
    await sleep(20);
  }
  assert.deepEqual(seen.map((event) => [event.name, event.data]), [['config_reloaded', { source: 'file', changed: ['log.level'] }]]);
  assert.equal(server.url, `http://${live}`);
  assert.equal((await plainRequest(`${server.url}/api/v1/config`, { headers: auth })).json<ConfigBody>().server.listen, live);

  // PUT of what GET showed, with another log level: 200, the listener stays.
  const body = { ...shown.json<ConfigBody>(), log: { level: 'debug' } };
  const put = await plainRequest(`${server.url}/api/v1/config`, { method: 'PUT', headers: auth, body });
  assert.equal(put.status, 200, put.body);
  assert.equal(put.json<ConfigBody>().server.listen, live);
  assert.equal(put.json<ConfigBody>().log.level, 'debug');
  assert.equal(server.url, `http://${live}`);
  assert.equal((await plainRequest(`${server.url}/api/v1/status`, { headers: auth })).status, 200);
  const reloaded = seen.filter((event) => event.name === 'config_reloaded').at(-1)!;
  assert.deepEqual(reloaded.data, { source: 'api', changed: ['log.level'] });
});
