/**
 * IPv6 and ICMP with real traffic through the REST service. Every flow stays inside two namespaces the
 * test creates (joined by the 20 ms delay relay, with IPv6 ULAs) or on a namespace's own ::1:
 * - TCP BLOCK of a copy of curl over IPv6, to ::1 and to the peer; a rule naming an IPv6 address or
 *   prefix blocks only that destination; remote_port works on IPv6.
 * - LIMIT over IPv6: a copy of iperf3 -6 at 1 MiB/s, download and upload, held within the bounds the
 *   IPv4 shaping e2e uses on this path.
 * - UDP BLOCK over IPv6: a copy of node sending datagrams (unconnected sendto and connected send).
 * - ICMP BLOCK on a copy of ping, over raw sockets (what iputils uses when ping sockets are not allowed)
 *   and over ping sockets (allowed by net.ipv4.ping_group_range, set in the client namespace only).
 * The peers are the real /usr/bin/node and /usr/bin/iperf3, which no rule matches.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { privilegedSuite } from '../helpers/privileged.js';
import { NetLab, waitForLine, type IperfServer, type NetPath } from '../net/netlab.js';
import { copyExecutable, runIperf } from '../net/iperf.js';
import { run } from '../net/exec.js';
import { NetClampService, eventually, ruleDraft, type RuleDraft, type StoredRule } from './service.js';
import { timedRun, type ProcessOutcome } from './http-fixture.js';

const LIMIT = 1024 * 1024;
/** The IPv4 shaping e2e's window and bounds for the 20 ms relay path at this rate. */
const LIMIT_SECONDS = 8;
const LIMIT_OMIT_SECONDS = 1;
const RELAY_TARGET = { min: 0.9, max: 1.03 };

const TCP_PORT = 8080;
const OTHER_TCP_PORT = 8081;
const UDP_PORT = 9000;
const OTHER_UDP_PORT = 9001;
/** curl's exit code for "could not connect" (what EPERM from connect() gives), as opposed to a timeout (28). */
const CURL_COULDNT_CONNECT = 7;

/** HTTP and UDP echo servers, run by the real node inside a namespace; prints `ready` once all listen. */
const PEER_SCRIPT = `
const http = require('node:http');
const dgram = require('node:dgram');
const endpoints = JSON.parse(process.argv[1]);
let pending = endpoints.length;
const ready = () => { if (--pending === 0) console.log('ready'); };
for (const e of endpoints) {
  if (e.kind === 'tcp') {
    http.createServer((req, res) => res.end('netclamp e2e\\n')).listen(e.port, e.address, ready);
  } else {
    const socket = dgram.createSocket(e.address.includes(':') ? 'udp6' : 'udp4');
    socket.on('message', (msg, from) => socket.send(msg, from.port, from.address));
    socket.bind(e.port, e.address, ready);
  }
}`;

/**
 * One datagram to ADDRESS PORT and wait for its echo. MODE `sendto` sends on an unconnected socket,
 * `connect` connects first. Prints what happened; exit 0 = echo, 1 = a socket error (its code), 2 = no echo.
 */
const UDP_CLIENT_SCRIPT = `
const dgram = require('node:dgram');
const [address, port, mode] = process.argv.slice(1);
const socket = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
const finish = (code, what) => { console.log(what); process.exit(code); };
setTimeout(() => finish(2, 'no echo'), 2000);
socket.on('message', () => finish(0, 'echo'));
socket.on('error', (error) => finish(1, error.code));
const sent = (error) => { if (error) finish(1, error.code); };
if (mode === 'connect') {
  socket.connect(Number(port), address, (error) => error ? finish(1, error.code) : socket.send('netclamp', sent));
} else {
  socket.send('netclamp', Number(port), address, sent);
}`;

interface Endpoint {
  kind: 'tcp' | 'udp';
  address: string;
  port: number;
}

function httpUrl(address: string, port: number): string {
  return address.includes(':') ? `http://[${address}]:${port}/small` : `http://${address}:${port}/small`;
}

/** `fd00:199:N::2` -> `fd00:199:N::/64`: the prefix the lab put both ends of the path in. */
function prefix64(address: string): string {
  const [network] = address.split('::');
  return `${network}::/64`;
}

type SocketKind = 'raw' | 'ping socket';

/**
 * The kind of ICMP socket a running process holds, read from /proc/<pid>/net/{raw,raw6,icmp,icmp6} (which
 * show the process's own network namespace), or null if it holds none (yet).
 */
function icmpSocketKindOf(pid: number): SocketKind | null {
  let inodes: Set<string>;
  try {
    inodes = new Set(
      readdirSync(`/proc/${pid}/fd`)
        .map((fd) => /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1])
        .filter((inode): inode is string => inode !== undefined),
    );
  } catch {
    return null; // exited
  }
  const holds = (table: string): boolean => {
    try {
      // Columns: sl local rem st tx:rx tr:tm retrnsmt uid timeout inode ...
      return readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)
        .some((line) => inodes.has(line.trim().split(/\s+/)[9] ?? ''));
    } catch {
      return false;
    }
  };
  if (holds('raw') || holds('raw6')) return 'raw';
  if (holds('icmp') || holds('icmp6')) return 'ping socket';
  return null;
}

describe('IPv6 and ICMP (e2e, real traffic)', privilegedSuite(), () => {
  let service: NetClampService;
  let lab: NetLab;
  let path: NetPath;
  let iperfServer: IperfServer;
  const copies: { path: string; remove: () => void }[] = [];

  before(async () => {
    lab = new NetLab();
    path = await lab.relayPath();
    const peer = lab.spawnInNamespace(path.serverNs, process.execPath, ['-e', PEER_SCRIPT, JSON.stringify([
      { kind: 'tcp', address: path.serverAddress6, port: TCP_PORT },
      { kind: 'tcp', address: path.serverAddress6, port: OTHER_TCP_PORT },
      { kind: 'tcp', address: path.serverAddress, port: TCP_PORT },
      { kind: 'udp', address: path.serverAddress6, port: UDP_PORT },
      { kind: 'udp', address: path.serverAddress6, port: OTHER_UDP_PORT },
    ] satisfies Endpoint[])]);
    // The client namespace's own ::1, the loopback case.
    const local = lab.spawnInNamespace(path.clientNs, process.execPath, ['-e', PEER_SCRIPT, JSON.stringify([
      { kind: 'tcp', address: '::1', port: TCP_PORT },
      { kind: 'udp', address: '::1', port: UDP_PORT },
    ] satisfies Endpoint[])]);
    await Promise.all([
      waitForLine(peer, /^ready$/m, 10_000, 'peer servers'),
      waitForLine(local, /^ready$/m, 10_000, 'loopback servers'),
    ]);
    iperfServer = await lab.startIperfServer(path, '/usr/bin/iperf3', path.serverAddress6);
    service = await NetClampService.start();
  });

  after(async () => {
    try {
      await service?.dispose();
    } finally {
      lab?.cleanup();
      for (const copy of copies) copy.remove();
    }
  });

  function copyOf(binary: string): string {
    const copy = copyExecutable(binary, 'nc-v6-app-');
    copies.push(copy);
    return copy.path;
  }

  /** Creates a rule that the test deletes when it ends, whatever happens. */
  async function ruleFor(t: TestContext, draft: RuleDraft): Promise<StoredRule> {
    const rule = await service.createRule(draft);
    t.after(() => service.request('DELETE', `/rules/${rule.id}`));
    assert.equal(rule.sync_state, 'SYNCED', `rule not synced: ${rule.sync_error}`);
    return rule;
  }

  const inClient = (binary: string, args: readonly string[]): Promise<ProcessOutcome> =>
    timedRun('ip', ['netns', 'exec', path.clientNs, binary, ...args], 15_000);

  const curl = (binary: string, address: string, port = TCP_PORT): Promise<ProcessOutcome> =>
    inClient(binary, ['-sS', '-g', '-o', '/dev/null', '--max-time', '5', httpUrl(address, port)]);

  async function assertCurlWorks(binary: string, address: string, port = TCP_PORT, why = ''): Promise<void> {
    const outcome = await curl(binary, address, port);
    assert.equal(outcome.code, 0, `${binary} -> ${httpUrl(address, port)} failed ${why}: ${outcome.stderr.trim()}`);
  }

  async function assertCurlRefused(binary: string, address: string, port = TCP_PORT): Promise<void> {
    const outcome = await curl(binary, address, port);
    assert.equal(outcome.code, CURL_COULDNT_CONNECT,
      `${binary} -> ${httpUrl(address, port)}: expected a refused connect, got exit ${outcome.code ?? outcome.signal}: ${outcome.stderr.trim()}`);
  }

  async function blockedCountOf(id: string): Promise<number> {
    return (await service.expect<StoredRule>(200, 'GET', `/rules/${id}`)).blocked_count;
  }

  test('TCP BLOCK over IPv6: ::1 and the peer refused, the same binary unruled works; address, prefix and port rules pick their destination', async (t) => {
    const app = copyOf('/usr/bin/curl');
    const peer6 = path.serverAddress6;
    // Everything works before any rule, so every later failure is a rule's doing.
    await assertCurlWorks(app, '::1');
    await assertCurlWorks(app, peer6);
    await assertCurlWorks(app, path.serverAddress);

    const all = await ruleFor(t, ruleDraft({ app_path: app, action: 'BLOCK' }));
    await assertCurlRefused(app, '::1');
    await assertCurlRefused(app, peer6);
    await assertCurlWorks('/usr/bin/curl', peer6, TCP_PORT, 'though only a copy of curl is ruled');
    assert.ok(await blockedCountOf(all.id) >= 2, 'the rule did not count the refused IPv6 connects');
    await service.expect(204, 'DELETE', `/rules/${all.id}`);
    await assertCurlWorks(app, peer6, TCP_PORT, 'after the rule was deleted');

    const draft = ruleDraft({ app_path: app, action: 'BLOCK', remote_address: peer6 });
    const byAddress = await ruleFor(t, draft);
    await assertCurlRefused(app, peer6);
    await assertCurlWorks(app, '::1', TCP_PORT, 'under a rule for another IPv6 address');
    await assertCurlWorks(app, path.serverAddress, TCP_PORT, 'over IPv4 under a rule for an IPv6 address');

    const byPrefix = await service.updateRule(byAddress.id, { ...draft, remote_address: prefix64(peer6) });
    assert.equal(byPrefix.sync_state, 'SYNCED', `rule not synced: ${byPrefix.sync_error}`);
    await assertCurlRefused(app, peer6);
    await assertCurlWorks(app, '::1', TCP_PORT, `under a rule for ${prefix64(peer6)}`);

    const otherPrefix = await service.updateRule(byAddress.id, { ...draft, remote_address: 'fd00:198::/32' });
    assert.equal(otherPrefix.sync_state, 'SYNCED', `rule not synced: ${otherPrefix.sync_error}`);
    await assertCurlWorks(app, peer6, TCP_PORT, 'under a rule for fd00:198::/32');

    const byPort = await service.updateRule(byAddress.id, { ...draft, remote_address: '', remote_port: TCP_PORT });
    assert.equal(byPort.sync_state, 'SYNCED', `rule not synced: ${byPort.sync_error}`);
    await assertCurlRefused(app, peer6, TCP_PORT);
    await assertCurlWorks(app, peer6, OTHER_TCP_PORT, `under a rule for port ${TCP_PORT}`);
  });

  test('UDP BLOCK over IPv6: a copy of node cannot send (sendto or connected) to the peer or ::1; unruled node can; remote_port picks the port', async (t) => {
    const app = copyOf(process.execPath);
    const udp = (binary: string, address: string, port: number, mode: 'sendto' | 'connect'): Promise<{ code: number | null; said: string }> =>
      run('ip', ['netns', 'exec', path.clientNs, binary, '-e', UDP_CLIENT_SCRIPT, address, String(port), mode], { allowFailure: true, timeoutMs: 15_000 })
        .then((result) => ({ code: result.code, said: (result.stdout + result.stderr).trim() }));
    const targets = [[path.serverAddress6, UDP_PORT], ['::1', UDP_PORT]] as const;

    for (const [address, port] of targets) {
      for (const mode of ['sendto', 'connect'] as const) {
        const outcome = await udp(app, address, port, mode);
        assert.equal(outcome.code, 0, `before any rule, ${mode} to [${address}]:${port}: ${outcome.said}`);
      }
    }

    const draft = ruleDraft({ app_path: app, action: 'BLOCK', protocol: 'UDP' });
    const rule = await ruleFor(t, draft);
    for (const [address, port] of targets) {
      for (const mode of ['sendto', 'connect'] as const) {
        const outcome = await udp(app, address, port, mode);
        // Refused at the socket call (EPERM), not silently dropped: the sender learns at once.
        assert.equal(outcome.code, 1, `blocked ${mode} to [${address}]:${port} was not refused: ${outcome.said}`);
        assert.match(outcome.said, /EPERM/, `blocked ${mode} to [${address}]:${port}`);
      }
      const unruled = await udp(process.execPath, address, port, 'sendto');
      assert.equal(unruled.code, 0, `unruled node to [${address}]:${port}: ${unruled.said}`);
    }
    assert.ok(await blockedCountOf(rule.id) >= 4, 'the rule did not count the refused sends');

    const byPort = await service.updateRule(rule.id, { ...draft, remote_port: UDP_PORT });
    assert.equal(byPort.sync_state, 'SYNCED', `rule not synced: ${byPort.sync_error}`);
    assert.equal((await udp(app, path.serverAddress6, UDP_PORT, 'sendto')).code, 1, `port ${UDP_PORT} not blocked`);
    const other = await udp(app, path.serverAddress6, OTHER_UDP_PORT, 'sendto');
    assert.equal(other.code, 0, `port ${OTHER_UDP_PORT} blocked by a rule for ${UDP_PORT}: ${other.said}`);
  });

  test(`LIMIT over IPv6: a copy of iperf3 -6 at 1 MiB/s, download then upload, within [${RELAY_TARGET.min}, ${RELAY_TARGET.max}] on the 20 ms relay`, async (t) => {
    const app = copyOf('/usr/bin/iperf3');
    const draft = ruleDraft({ app_path: app, action: 'LIMIT', rate_limit_down_bytes_per_sec: LIMIT });
    const rule = await ruleFor(t, draft);
    const measure = async (reverse: boolean): Promise<number> => {
      const result = await runIperf({
        ns: path.clientNs, binary: app, server: iperfServer, seconds: LIMIT_SECONDS, omitSeconds: LIMIT_OMIT_SECONDS, reverse,
      });
      return result.goodputBytesPerSec / LIMIT;
    };

    const download = await measure(true);
    const counted = await service.expect<StoredRule>(200, 'GET', `/rules/${rule.id}`);
    await service.updateRule(rule.id, { ...draft, rate_limit_down_bytes_per_sec: null, rate_limit_up_bytes_per_sec: LIMIT });
    const upload = await measure(false);
    t.diagnostic(`IPv6 achieved/limit: download ${download.toFixed(3)}, upload ${upload.toFixed(3)}; rule counted ${counted.bytes_down} B down`);
    // The rule saw the IPv6 bytes: at least what the measured window carried.
    assert.ok(counted.bytes_down >= LIMIT_SECONDS * LIMIT * RELAY_TARGET.min, `the rule counted only ${counted.bytes_down} B of the IPv6 download`);
    assert.ok(download >= RELAY_TARGET.min && download <= RELAY_TARGET.max, `download ratio ${download.toFixed(3)}`);
    assert.ok(upload >= RELAY_TARGET.min && upload <= RELAY_TARGET.max, `upload ratio ${upload.toFixed(3)}`);
  });

  for (const kind of ['raw', 'ping socket'] as const satisfies readonly SocketKind[]) {
    test(`ICMP BLOCK on a copy of ping (${kind}): blocks ping -6 to the peer and ::1 and ping -4; unruled ping works; a TCP rule does not block ping; counters move`, async (t) => {
      // ping_group_range is per network namespace: "0 0" lets root open ping sockets, which iputils
      // then prefers; the default "1 0" allows nobody, so it falls back to a raw socket.
      await run('ip', ['netns', 'exec', path.clientNs, 'sysctl', '-q', '-w', `net.ipv4.ping_group_range=${kind === 'raw' ? '1 0' : '0 0'}`]);
      const app = copyOf('/usr/bin/ping');
      const targets = [['-6', path.serverAddress6], ['-6', '::1'], ['-4', path.serverAddress]] as const;
      // iputils reports a refused send as a lost packet and waits -W for a reply: a short wait where a
      // block is expected, a long one (it returns at the reply) where the ping must get through.
      const ping = (binary: string, family: string, address: string, waitSeconds: number): Promise<ProcessOutcome> =>
        inClient(binary, ['-n', '-c', '1', '-W', String(waitSeconds), family, address]);
      const assertPings = async (binary: string, why: string): Promise<void> => {
        for (const [family, address] of targets) {
          const outcome = await ping(binary, family, address, 5);
          assert.equal(outcome.code, 0, `${binary} ${family} ${address} failed ${why}: ${outcome.stderr.trim()}`);
        }
      };

      // Which socket the copy really opens, read from /proc while it runs.
      const probe = spawn('ip', ['netns', 'exec', path.clientNs, app, '-n', '-6', '-c', '5', '-i', '0.3', '::1'], { stdio: 'ignore' });
      t.after(() => probe.kill('SIGKILL'));
      const seen = await eventually(async () => (probe.pid ? icmpSocketKindOf(probe.pid) : null), 3000, 20);
      assert.equal(seen, kind, `the copy of ping used ${seen ?? 'no ICMP socket'}`);
      probe.kill('SIGKILL'); // its later packets would blur the counters below
      await assertPings(app, 'before any rule');

      const tcpOnly = ruleDraft({ app_path: app, action: 'BLOCK', protocol: 'TCP' });
      const rule = await ruleFor(t, tcpOnly);
      await assertPings(app, 'under a TCP-only BLOCK rule');
      const blockedBefore = (await service.status()).total_blocked;

      const icmp = await service.updateRule(rule.id, { ...tcpOnly, protocol: 'ICMP' });
      assert.equal(icmp.sync_state, 'SYNCED', `rule not synced: ${icmp.sync_error}`);
      for (const [family, address] of targets) {
        const outcome = await ping(app, family, address, 1);
        t.diagnostic(`blocked ${kind} ping ${family} ${address}: exit ${outcome.code}, ${outcome.elapsedMs.toFixed(0)} ms, ${outcome.stderr.trim()}`);
        assert.notEqual(outcome.code, 0, `ping ${family} ${address} got through an ICMP BLOCK rule`);
        assert.equal(outcome.signal, null, `ping ${family} ${address} hung`);
      }
      await assertPings('/usr/bin/ping', 'though only a copy of ping is ruled');
      const counted = await blockedCountOf(rule.id);
      assert.ok(counted >= targets.length, `the ICMP rule counted ${counted} blocked, expected >= ${targets.length}`);
      const after = await eventually(async () => {
        const status = await service.status();
        return status.total_blocked >= blockedBefore + targets.length ? status : null;
      }, 3000);
      assert.ok(after, `total_blocked did not grow by ${targets.length} from ${blockedBefore}`);

      const toPeer = await service.updateRule(rule.id, { ...tcpOnly, protocol: 'ICMP', remote_address: path.serverAddress6 });
      assert.equal(toPeer.sync_state, 'SYNCED', `rule not synced: ${toPeer.sync_error}`);
      assert.notEqual((await ping(app, '-6', path.serverAddress6, 1)).code, 0, 'ping to the peer got through an ICMP rule naming it');
      const local = await ping(app, '-6', '::1', 5);
      assert.equal(local.code, 0, `ping to ::1 blocked by an ICMP rule for ${path.serverAddress6}: ${local.stderr.trim()}`);
    });
  }
});
