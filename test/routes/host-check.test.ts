/** The DNS-rebinding defence takes every loopback spelling, including 127.0.0.0/8 mapped into IPv6. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertProblem, startTestApp } from '../helpers/app.js';

test('Host: IPv4-mapped loopback ([::ffff:127.0.0.1], hex or not) is loopback; other mapped addresses are 403', async (t) => {
  const { request } = await startTestApp(t);
  for (const host of ['[::ffff:127.0.0.1]', '[::ffff:127.0.0.1]:19845', '[::FFFF:7f00:1]', '[0:0:0:0:0:ffff:127.1.2.3]:80']) {
    const response = await request({ method: 'GET', url: '/api/v1/status', headers: { host } });
    assert.equal(response.statusCode, 200, `${host}: ${response.body}`);
  }
  for (const host of ['[::ffff:10.0.0.1]', '[::ffff:a00:1]:9845', '[::127.0.0.1]', '[64:ff9b::127.0.0.1]']) {
    assertProblem(await request({ method: 'GET', url: '/api/v1/status', headers: { host } }), 403);
  }
});
