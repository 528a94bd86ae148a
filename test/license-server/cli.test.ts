/**
 * The license server's entry point: settings from NETCLAMP_LS_* (every problem named at once, defaults
 * filled in), `serve` listening and stopping cleanly on SIGTERM, `keygen` printing a usable key pair.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKeyPairSync } from 'node:crypto';
import { privateKeyFromText, rawPrivateSeed, rawPublicKey } from '../../lib/license/token.js';
import { DEFAULT_DB, DEFAULT_PACKS, LicenseServerConfigError, settingsFromEnv } from '../../lib/license-server/config.js';
import { PACKS } from './harness.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../lib/license-server/cli.js');

function validEnv(): Record<string, string> {
  return {
    NETCLAMP_LS_PRIVATE_KEY: rawPrivateSeed(generateKeyPairSync('ed25519').privateKey),
    NETCLAMP_LS_WEBHOOK_SECRET: 'whsec',
    NETCLAMP_LS_PROVIDER_API_KEY: 'key',
    NETCLAMP_LS_STORE_ID: '42',
  };
}

function problemsOf(env: Record<string, string>): string[] {
  try {
    settingsFromEnv(env);
  } catch (error) {
    assert.ok(error instanceof LicenseServerConfigError, String(error));
    return error.problems;
  }
  assert.fail('settings were accepted');
}

test('settings: defaults filled in; the key as seed or PEM', () => {
  const env = validEnv();
  const settings = settingsFromEnv(env);
  assert.equal(rawPublicKey(settings.privateKey), rawPublicKey(privateKeyFromText(env.NETCLAMP_LS_PRIVATE_KEY!)));
  assert.deepEqual(settings.provider, { url: 'https://api.lemonsqueezy.com', apiKey: 'key', storeId: '42', timeoutMs: 10_000 });
  assert.deepEqual(settings.listen, { host: '127.0.0.1', port: 9846 });
  assert.deepEqual(settings.packs, DEFAULT_PACKS);
  assert.equal(settings.dbPath, DEFAULT_DB);

  const pem = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const custom = settingsFromEnv({
    ...env, NETCLAMP_LS_PRIVATE_KEY: pem, NETCLAMP_LS_PACKS: JSON.stringify(PACKS), NETCLAMP_LS_LISTEN: '[::1]:0',
    NETCLAMP_LS_DB: '/tmp/x.db', NETCLAMP_LS_PROVIDER_URL: 'http://127.0.0.1:1', NETCLAMP_LS_PROVIDER_TIMEOUT_MS: '2500',
  });
  assert.deepEqual(custom.packs, PACKS);
  assert.deepEqual(custom.listen, { host: '::1', port: 0 });
  assert.equal(custom.dbPath, '/tmp/x.db');
  assert.equal(custom.provider.url, 'http://127.0.0.1:1');
  assert.equal(custom.provider.timeoutMs, 2500);
});

test('settings: every missing or bad variable is named at once', () => {
  assert.deepEqual(problemsOf({}), [
    'NETCLAMP_LS_PRIVATE_KEY is not set', 'NETCLAMP_LS_WEBHOOK_SECRET is not set',
    'NETCLAMP_LS_PROVIDER_API_KEY is not set', 'NETCLAMP_LS_STORE_ID is not set',
  ]);
  const bad = problemsOf({
    ...validEnv(), NETCLAMP_LS_PRIVATE_KEY: 'AAAA', NETCLAMP_LS_PACKS: '[{"variant_id":"1","name":"x","units":0,"price":"9","currency":"EUR"}]',
    NETCLAMP_LS_LISTEN: 'nowhere', NETCLAMP_LS_PROVIDER_URL: 'ftp://x', NETCLAMP_LS_PROVIDER_TIMEOUT_MS: 'soon',
  });
  assert.equal(bad.length, 5, bad.join('\n'));
  assert.match(bad[0]!, /PRIVATE_KEY: private key seed is 3 bytes/);
  assert.ok(bad.some((p) => /NETCLAMP_LS_PACKS: .*units/.test(p) && /price/.test(p)), bad.join('\n'));
  assert.ok(bad.some((p) => /NETCLAMP_LS_LISTEN: must be HOST:PORT/.test(p)));
  assert.ok(bad.some((p) => /NETCLAMP_LS_PROVIDER_URL/.test(p)));
  assert.ok(bad.some((p) => /NETCLAMP_LS_PROVIDER_TIMEOUT_MS/.test(p)));
  assert.match(problemsOf({ ...validEnv(), NETCLAMP_LS_PACKS: '{' })[0]!, /not JSON/);
  assert.match(problemsOf({ ...validEnv(), NETCLAMP_LS_PACKS: JSON.stringify([PACKS[0], PACKS[0]]) })[0]!, /unique/);
});

test('keygen prints a seed and the matching public key', () => {
  const result = spawnSync(process.execPath, [cli, 'keygen'], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  const seed = /^NETCLAMP_LS_PRIVATE_KEY=([A-Za-z0-9_-]{43})$/m.exec(result.stdout)?.[1];
  const publicKey = /public key.*: ([A-Za-z0-9_-]{43})$/m.exec(result.stdout)?.[1];
  assert.ok(seed !== undefined && publicKey !== undefined, result.stdout);
  assert.equal(rawPublicKey(privateKeyFromText(seed)), publicKey);
});

test('serve refuses to start without its settings, naming them', () => {
  const result = spawnSync(process.execPath, [cli, 'serve'], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
  assert.equal(result.status, 2);
  assert.match(result.stderr, /NETCLAMP_LS_PRIVATE_KEY is not set/);
  assert.match(result.stderr, /NETCLAMP_LS_STORE_ID is not set/);
});

test('serve listens, answers, and exits 0 on SIGTERM', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'netclamp-ls-cli-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const child = spawn(process.execPath, [cli, 'serve'], {
    env: {
      PATH: process.env.PATH ?? '', ...validEnv(), NETCLAMP_LS_LISTEN: '127.0.0.1:0', NETCLAMP_LS_DB: path.join(dir, 'ls.db'),
      NETCLAMP_LS_PACKS: JSON.stringify(PACKS), NETCLAMP_LS_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8'); });
  const url = await new Promise<string>((resolve, reject) => {
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
      const match = /listening on (http:\/\/\S+)/.exec(stdout);
      if (match !== null) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`exited ${code} before listening: ${stderr}`)));
  });
  const packs = await (await fetch(`${url}/v1/packs`)).json();
  assert.deepEqual(packs, { packs: PACKS });
  assert.ok(fs.existsSync(path.join(dir, 'ls.db')));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  assert.equal(await exited, 0, stderr);
});
