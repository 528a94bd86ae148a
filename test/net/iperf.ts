/**
 * iperf3 client runs and ping, inside a test namespace. The client binary is usually a COPY of iperf3
 * (the "app" a rule matches by device+inode); the server is the real /usr/bin/iperf3, which no rule matches.
 */
import { copyFileSync, mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { run } from './exec.js';

export interface IperfTarget {
  address: string;
  port: number;
}

export interface IperfOptions {
  ns: string;
  /** Executable to run as the client (a copy, so a rule can match it). */
  binary: string;
  server: IperfTarget;
  seconds: number;
  /** Parallel connections (-P). */
  parallel?: number;
  /** Download: the server sends, the app receives (-R). */
  reverse?: boolean;
  /** Seconds at the start left out of the totals (-O), to skip slow start and the initial burst. */
  omitSeconds?: number;
  /** Reporting interval for `intervals`, seconds. */
  intervalSeconds?: number;
  /** TCP congestion control for the run (-C); the namespace default when absent. */
  congestion?: string;
  /** Command words put before the binary, e.g. ['trickle', '-s', '-u', '1024'] to run it under trickle. */
  prefix?: readonly string[];
  /** UDP at this target rate in bytes/s (-u -b); TCP when absent. */
  udpBytesPerSec?: number;
  /** UDP datagram size (-l), bytes. */
  udpLength?: number;
}

export interface IperfInterval {
  start: number;
  end: number;
  /**
   * The client's view per interval: bytes received (download) or bytes written (upload; bursty at low
   * rates because writes land in the send buffer, so compare averages over several intervals).
   */
  bytesPerSec: number;
}

export interface IperfResult {
  /**
   * Achieved goodput, B/s: bytes that reached the receiver, in both directions. The sender's count is
   * not used because it includes whatever still sat in its send buffer when the test ended (measured:
   * 1.43x the limit at 256 KiB/s with 4 connections over the 20 ms path, while 0.998x arrived).
   */
  goodputBytesPerSec: number;
  sentBytes: number;
  receivedBytes: number;
  seconds: number;
  retransmits: number | null;
  intervals: IperfInterval[];
  /** iperf3's JSON, for diagnostics. */
  raw: unknown;
}

interface IperfSum {
  bytes: number;
  seconds: number;
  start: number;
  end: number;
  retransmits?: number;
}

interface IperfJson {
  error?: string;
  intervals?: { sum: IperfSum & { omitted?: boolean } }[];
  end?: { sum_sent?: IperfSum; sum_received?: IperfSum };
}

export async function runIperf(options: IperfOptions): Promise<IperfResult> {
  const args = [
    'netns', 'exec', options.ns, ...(options.prefix ?? []), options.binary,
    '-c', options.server.address, '-p', String(options.server.port),
    '-t', String(options.seconds),
    '-P', String(options.parallel ?? 1),
    '-i', String(options.intervalSeconds ?? 1),
    '--json',
  ];
  if (options.reverse) args.push('-R');
  if (options.omitSeconds) args.push('-O', String(options.omitSeconds));
  if (options.congestion) args.push('-C', options.congestion);
  if (options.udpBytesPerSec !== undefined) {
    // iperf3's -b is bits/s; the rate is per stream.
    args.push('-u', '-b', String(Math.round(options.udpBytesPerSec * 8)));
    if (options.udpLength) args.push('-l', String(options.udpLength));
  }
  const timeoutMs = (options.seconds + (options.omitSeconds ?? 0) + 20) * 1000;
  const result = await run('ip', args, { allowFailure: true, timeoutMs });
  let parsed: IperfJson;
  try {
    parsed = JSON.parse(result.stdout) as IperfJson;
  } catch {
    const detail = result.stderr.trim() || result.stdout.slice(0, 400) || `no output: killed at the ${timeoutMs / 1000} s timeout?`;
    throw new Error(`iperf3 gave no JSON (exit ${result.code}): ${detail}`);
  }
  if (parsed.error || result.code !== 0) {
    throw new Error(`iperf3 failed (exit ${result.code}): ${parsed.error ?? result.stderr.trim()}`);
  }
  const sent = parsed.end?.sum_sent;
  const received = parsed.end?.sum_received;
  if (!sent || !received) throw new Error('iperf3 JSON lacks end.sum_sent / end.sum_received');
  return {
    goodputBytesPerSec: received.bytes / received.seconds,
    sentBytes: sent.bytes,
    receivedBytes: received.bytes,
    seconds: received.seconds,
    retransmits: sent.retransmits ?? null,
    intervals: (parsed.intervals ?? [])
      .filter((interval) => !interval.sum.omitted)
      .map((interval) => ({
        start: interval.sum.start,
        end: interval.sum.end,
        bytesPerSec: interval.sum.bytes / Math.max(interval.sum.seconds, 1e-9),
      })),
    raw: parsed,
  };
}

/** Average RTT in ms from `count` pings sent inside `ns`. */
export async function pingRttMs(ns: string, address: string, count = 10): Promise<{ avg: number; min: number; max: number; loss: number }> {
  const result = await run('ip', ['netns', 'exec', ns, 'ping', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '2', address], {
    allowFailure: true,
    timeoutMs: 30_000,
  });
  const loss = /([\d.]+)% packet loss/.exec(result.stdout);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)/.exec(result.stdout);
  if (!loss || !rtt) throw new Error(`ping output not understood (exit ${result.code}): ${result.stdout} ${result.stderr}`);
  return { min: Number(rtt[1]), avg: Number(rtt[2]), max: Number(rtt[3]), loss: Number(loss[1]) };
}

/**
 * A private copy of an executable in a fresh temp dir: a distinct inode, so a rule on it matches only
 * processes started from the copy. `remove()` deletes the directory.
 */
export function copyExecutable(source: string, prefix = 'nc-app-'): { path: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const path = join(dir, basename(source));
  copyFileSync(source, path);
  chmodSync(path, 0o755);
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
