import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { makeDataDir } from '../helpers/app.js';
import { FakeEngine, openFakeEngine } from '../helpers/fake-engine.js';
import { serve } from '../../lib/server.js';
import { ensureDataDir, resolveDataDir } from '../../lib/services/data-dir.js';
import { ConfigError, loadConfig, parseListen } from '../../lib/services/config.js';

const cli = new URL('../../lib/cli.js', import.meta.url).pathname;

test('data dir: flag, then NETCLAMP_DATA_DIR, then /var/lib/netclamp for root, else XDG state', () => {
  const env = { NETCLAMP_DATA_DIR: '/env/dir', XDG_STATE_HOME: '/xdg', HOME: '/home/u' };
  assert.equal(resolveDataDir({ flag: '/flag/dir', env, platform: 'linux', isRoot: true }), '/flag/dir');
  assert.equal(resolveDataDir({ env, platform: 'linux', isRoot: true }), '/env/dir');
  assert.equal(resolveDataDir({ env: {}, platform: 'linux', isRoot: true }), '/var/lib/netclamp');
  assert.equal(resolveDataDir({ env: { XDG_STATE_HOME: '/xdg' }, platform: 'linux', isRoot: false }), '/xdg/netclamp');
  assert.match(resolveDataDir({ env: {}, platform: 'linux', isRoot: false }), /\/\.local\/state\/netclamp$/);
});

test('a data dir the service creates is mode 0700', (t) => {
  const parent = makeDataDir(t);
  const dir = path.join(parent, 'a', 'b');
  ensureDataDir(dir);
  assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
});

test('config.toml: written with defaults on first start; invalid content names the field', (t) => {
  const dir = makeDataDir(t);
  const defaults = { events: { heartbeat_sec: 15, replay_buffer: 1000 }, license: { server_url: '' } };
  assert.deepEqual(loadConfig(dir), { server: { listen: '127.0.0.1:9845' }, log: { level: 'info' }, ...defaults });
  assert.match(fs.readFileSync(path.join(dir, 'config.toml'), 'utf8'), /listen = "127.0.0.1:9845"/);
  fs.writeFileSync(path.join(dir, 'config.toml'), '[server]\nlisten = "127.0.0.1:5000"\n');
  assert.deepEqual(loadConfig(dir), { server: { listen: '127.0.0.1:5000' }, log: { level: 'info' }, ...defaults });
  for (const [content, field] of [
    ['[server]\nlisten = 5\n', 'server.listen'],
    ['[server]\nlisten = "nohost"\n', 'server.listen'],
    ['[server]\nport = 1\n', 'server.port'],
    ['[log]\nlevel = "loud"\n', 'log.level'],
  ] as const) {
    fs.writeFileSync(path.join(dir, 'config.toml'), content);
    assert.throws(() => loadConfig(dir), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.ok(error.errors.some((e) => e.field === field), `${content}: ${error.message}`);
      return true;
    });
  }
  assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
  assert.throws(() => parseListen('127.0.0.1:70000'));
});

test('serve: two instances side by side, the command line overrides config.toml, close closes the engine', async (t) => {
  const dirs = [makeDataDir(t), makeDataDir(t)];
  fs.writeFileSync(path.join(dirs[0]!, 'config.toml'), '[server]\nlisten = "127.0.0.1:1"\n');
  const engines: FakeEngine[] = [];
  const servers = [];
  for (const dataDir of dirs) {
    const server = await serve({
      dataDir, listen: '127.0.0.1:0',
      engineFactory: async () => { const engine = await openFakeEngine(); engines.push(engine); return engine; },
    });
    t.after(() => server.close());
    servers.push(server);
  }
  assert.notEqual(servers[0]!.url, servers[1]!.url);
  for (const server of servers) {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const token = fs.readFileSync(path.join(server.dataDir, 'auth.token'), 'utf8').trim();
    const response = await fetch(`${server.url}/api/v1/status`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(response.status, 200);
    assert.equal((await response.json() as { wfp_session_state: string }).wfp_session_state, 'OPEN');
  }
  await servers[0]!.close();
  assert.equal(engines[0]!.state, 'DOWN', 'engine closed with the server');
  assert.equal(engines[1]!.state, 'OPEN');
});

test('cli: --help prints usage; a wrong command or --listen exits 2', () => {
  const help = execFileSync(process.execPath, [cli, '--help'], { encoding: 'utf8' });
  assert.match(help, /netclamp serve \[--data-dir DIR\] \[--listen HOST:PORT\]/);
  const wrong = spawnSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8' });
  assert.equal(wrong.status, 2);
  assert.match(wrong.stderr, /unknown command/);
  const badListen = spawnSync(process.execPath, [cli, 'serve', '--listen', 'nonsense'], { encoding: 'utf8' });
  assert.equal(badListen.status, 2);
  assert.match(badListen.stderr, /--listen nonsense/);
});
