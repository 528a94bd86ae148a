/**
 * A TCP transfer whose receiver reports its byte count every 10 ms, for watching a rate change while the
 * transfer runs (bench/responsiveness.ts). Both ends are one small Python program: the "app" end runs a
 * private copy of python3 (a distinct inode, so a rule matches only it) in the path's client namespace,
 * the peer end runs /usr/bin/python3 (no rule matches it) in the server namespace. Upload: the app sends
 * and the peer counts; download: the peer sends and the app counts. Timestamps are CLOCK_MONOTONIC
 * (Python's monotonic_ns), the clock Node's process.hrtime.bigint() reads, so samples and API calls share
 * one time line.
 */
import type { ChildProcess } from 'node:child_process';
import type { NetLab, NetPath } from '../test/net/netlab.js';
import { waitForLine } from '../test/net/netlab.js';
import type { Direction } from './shapers.js';

/** One receiver report: monotonic time (ns) and the bytes received since the connection opened. */
export interface ByteSample {
  ns: bigint;
  bytes: number;
}

export const SAMPLE_INTERVAL_MS = 10;

// argv: role (listen|connect), job (send|recv), address, port. The listener prints "listening" once
// bound; a receiver prints "<monotonic ns> <bytes>" every SAMPLE_INTERVAL_MS while data flows.
const PROBE_SOURCE = `
import socket, sys, time
role, job, address, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if role == 'listen':
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, port))
    server.listen(1)
    print('listening', flush=True)
    conn, _ = server.accept()
else:
    conn = socket.create_connection((address, port))
out = sys.stdout
if job == 'send':
    block = b'x' * 65536
    try:
        while True:
            conn.sendall(block)
    except OSError:
        sys.exit(0)
interval = ${SAMPLE_INTERVAL_MS} * 1000000
buf = bytearray(262144)
total = 0
conn.settimeout(0.002)
due = time.monotonic_ns() + interval
while True:
    try:
        n = conn.recv_into(buf)
        if n == 0:
            break
        total += n
    except socket.timeout:
        pass
    now = time.monotonic_ns()
    if now >= due:
        out.write('%d %d\\n' % (now, total))
        out.flush()
        due += interval * ((now - due) // interval + 1)
`;

export interface RateProbe {
  samples: ByteSample[];
  stop(): void;
}

/**
 * Starts a transfer over `path`: `appPython` is the copy a rule matches. Resolves once the connection
 * carries data (the first receiver sample).
 */
export async function startRateProbe(lab: NetLab, path: NetPath, direction: Direction, appPython: string, port: number): Promise<RateProbe> {
  const appJob = direction === 'upload' ? 'send' : 'recv';
  const peerJob = direction === 'upload' ? 'recv' : 'send';
  // A copied python3 finds its standard library through PYTHONHOME, not its own location.
  const peer = lab.spawnInNamespace(path.serverNs, '/usr/bin/python3', ['-c', PROBE_SOURCE, 'listen', peerJob, path.serverAddress, String(port)]);
  await waitForLine(peer, /^listening$/m, 5000, 'rate probe listener');
  const app = lab.spawnInNamespace(path.clientNs, 'env', ['PYTHONHOME=/usr', appPython, '-c', PROBE_SOURCE, 'connect', appJob, path.serverAddress, String(port)]);
  const receiver = direction === 'upload' ? peer : app;
  const samples: ByteSample[] = [];
  collectSamples(receiver, samples);
  await waitForLine(receiver, /^\d+ \d+$/m, 10_000, 'rate probe receiver');
  return {
    samples,
    stop: () => {
      for (const child of [app, peer]) {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }
    },
  };
}

function collectSamples(child: ChildProcess, samples: ByteSample[]): void {
  let pending = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const match = /^(\d+) (\d+)$/.exec(line);
      if (match) samples.push({ ns: BigInt(match[1]!), bytes: Number(match[2]) });
    }
  });
}
