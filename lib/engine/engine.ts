/**
 * The engine contract: the one interface between the service and the OS data plane.
 *
 * The service owns the truth (rules in SQLite); an engine holds a copy of the enabled rules in the
 * kernel and enforces them. Every method that touches the kernel is asynchronous and never blocks the
 * event loop. Implementations: `NativeEngine` (the addon: eBPF on Linux, WFP + driver on Windows) and
 * test doubles.
 *
 * Contract:
 * - `open()` attaches the data plane. Until it resolves, every other kernel call rejects with code
 *   `ENGINE_DOWN`. `close()` detaches everything; after it nothing of NetClamp stays in the kernel.
 * - `applyRule(rule)` inserts or replaces the rule with `rule.id` atomically: packets see either the old or
 *   the new version, never a mix. It applies to connections that are already open. With
 *   `resetCounters`, the rule's counters restart from zero. If the app path cannot be resolved (file
 *   missing) it rejects with code `ENOENT` and the rule is not installed (a previous version is removed).
 * - `removeRule(id)` removes it; removing an unknown id is not an error.
 * - `installedRules()` reads back, from the kernel, which rule ids are installed and a fingerprint of what
 *   was installed for each, so the service can reconcile both ways.
 * - `readCounters()` returns cumulative counters since `open()` (per rule: since its last reset).
 * - Errors are `EngineError`s: `code` is a stable string (errno names such as `ENOENT`, `EPERM`, or
 *   `ENGINE_DOWN`, `BPF_LOAD`, `UNSUPPORTED`), `errno` the OS error number when there is one.
 */

import { createHash } from 'node:crypto';

export type RuleAction = 'ALLOW' | 'BLOCK' | 'LIMIT';
export type RuleDirection = 'INBOUND' | 'OUTBOUND' | 'BOTH';
export type RuleProtocol = 'ANY' | 'TCP' | 'UDP' | 'ICMP';
export type LimitScope = 'PER_APP' | 'PER_PROCESS' | 'PER_CONNECTION';
export type MatchMode = 'EXACT_PATH' | 'FILENAME' | 'DIRECTORY';

/** What the kernel needs of one enabled rule. Validated by the service before it gets here. */
export interface EngineRule {
  /** Rule id, 1 .. 2^31-1. */
  id: number;
  action: RuleAction;
  direction: RuleDirection;
  protocol: RuleProtocol;
  /** '' = any; an IPv4/IPv6 address or CIDR prefix. */
  remoteAddress: string;
  /** 0 = any. */
  remotePort: number;
  /** Bytes per second, or null for no limit in that direction (LIMIT only). */
  rateDownBytesPerSec: number | null;
  rateUpBytesPerSec: number | null;
  limitScope: LimitScope;
  matchMode: MatchMode;
  /** '' = every application; otherwise an absolute path. */
  appPath: string;
  priority: number;
  /** Restart the rule's counters from zero (the service sets it when the rule changed). */
  resetCounters: boolean;
}

export interface InstalledRule {
  id: number;
  /** Opaque digest of the installed rule; equal to `fingerprintOf` of the rule that was applied. */
  fingerprint: string;
}

export interface RuleCounters {
  id: number;
  bytesUp: number;
  bytesDown: number;
  blocked: number;
}

export interface EngineCounters {
  rules: RuleCounters[];
  /** Totals over all traffic the data plane saw, matched or not. */
  bytesUp: number;
  bytesDown: number;
  blocked: number;
}

export type EngineSessionState = 'OPEN' | 'DOWN' | 'RECOVERING' | 'UNAVAILABLE';

export interface EngineStatus {
  platform: NodeJS.Platform;
  /** The filtering programs (Linux) / WFP session (Windows) are attached. */
  filtering: boolean;
  /** The shaping path (Linux skb programs / Windows driver) is active. */
  shaping: boolean;
  state: EngineSessionState;
  /** Why the engine is not OPEN, when it is not. */
  detail: string | null;
  /** Data-plane re-attaches survived (Windows: BFE bounces; Linux: re-opens after the links were lost). */
  restarts?: number;
}

/** One socket of the OS connection table, with its owning process (contract: /connections). */
export interface ConnectionEntry {
  protocol: 'TCP' | 'UDP';
  localAddress: string;
  localPort: number;
  /** '' for an unconnected UDP socket. */
  remoteAddress: string;
  remotePort: number;
  /** TCP state name (ESTABLISHED, LISTEN, ...); '' for UDP. */
  state: string;
  /** 0 when no process holds the socket (e.g. TIME_WAIT). */
  pid: number;
  /** '' when the process image cannot be read. */
  appPath: string;
}

/** Cumulative traffic per process since open(), from the data plane (for /apps). */
export interface ProcessActivity {
  pid: number;
  bytesUp: number;
  bytesDown: number;
  blocked: number;
}

/**
 * Cumulative traffic per executable identity since open(), for quotas. Identity = the file's inode and its
 * device in the kernel's encoding `(major << 20) | minor` (see binding/README.md); counters can restart
 * from zero (re-open, LRU eviction of an idle identity).
 */
export interface ExecutableActivity {
  dev: number;
  ino: number;
  bytesUp: number;
  bytesDown: number;
  blocked: number;
}

/**
 * A FILENAME/DIRECTORY pattern whose executables the service needs to know outside any rule: quotas count
 * by executable identity, so a pattern quota counts every identity its watch has learned.
 */
export interface PatternWatch {
  id: number;
  matchMode: 'FILENAME' | 'DIRECTORY';
  path: string;
}

/** What the engine learned for one watch: identities seen running or exec'ing that the pattern covers. */
export interface WatchedIdentities {
  id: number;
  identities: Array<{ dev: number; ino: number }>;
}

/**
 * Rule ids from here up are the service's own (quota actions): never issued to user rules, never listed in
 * /rules, and left alone by the rule service's reconcile and start-up sweep.
 */
export const INTERNAL_RULE_ID_BASE = 2 ** 30;

export function isInternalRuleId(id: number): boolean {
  return id >= INTERNAL_RULE_ID_BASE;
}

export interface CompetingShaper {
  name: string;
  detail: string;
}

export class EngineError extends Error {
  readonly code: string;
  readonly errno: number | undefined;
  constructor(code: string, message: string, errno?: number) {
    super(message);
    this.name = 'EngineError';
    this.code = code;
    this.errno = errno;
  }
}

export interface Engine {
  open(): Promise<void>;
  close(): Promise<void>;
  status(): EngineStatus;
  applyRule(rule: EngineRule): Promise<void>;
  removeRule(id: number): Promise<void>;
  installedRules(): Promise<InstalledRule[]>;
  readCounters(): Promise<EngineCounters>;
  // Optional live views; an engine without them reports nothing (empty lists).
  /** Live sockets of the machine with their owners. */
  connections?(): Promise<ConnectionEntry[]>;
  /** Per-process traffic since open(). */
  processActivity?(): Promise<ProcessActivity[]>;
  /** Other traffic shapers or filters on the machine. */
  competingShapers?(): Promise<CompetingShaper[]>;
  /** Per-executable traffic since open() (quotas); an engine without it cannot count quotas. */
  appActivity?(): Promise<ExecutableActivity[]>;
  /**
   * Replaces the set of pattern watches and returns what each knows now. A watch whose id, mode and path
   * are unchanged keeps its identities; a new one starts from the running processes, and execs add to it
   * from then on. An engine without it cannot count FILENAME/DIRECTORY quotas.
   */
  watchPatterns?(watches: PatternWatch[]): Promise<WatchedIdentities[]>;
}

/**
 * The fingerprint both sides agree on: a digest of every field that changes enforcement, as 16 hex
 * digits (a u64 the native engine stores in the kernel next to the rule and reads back in
 * `installedRules()`), so reconcile compares kernel state, not a user-space shadow.
 */
export function fingerprintOf(rule: EngineRule): string {
  const canonical = [
    rule.action, rule.direction, rule.protocol, rule.remoteAddress, rule.remotePort,
    rule.rateDownBytesPerSec ?? '-', rule.rateUpBytesPerSec ?? '-', rule.limitScope, rule.matchMode,
    rule.appPath, rule.priority,
  ].join('|');
  return createHash('sha256').update(canonical).digest('hex').slice(0, 16);
}
