/**
 * `npm run bench:control` (root): the REST control plane against the real service and kernel.
 *
 * Phases (--phases latency,engine,bulk,listing, default all), each on a fresh service or engine, so no
 * phase pays for the previous one's rules:
 *  - latency: POST /rules -> 201 for --latency-rules rules, one at a time, each on its own executable
 *    file. RuleService answers 201 only after the engine has written the rule and its lists into the
 *    kernel maps (create -> applyEnabled -> engine.applyRule), so the response time is the time to
 *    enforcement; a few rules are read back from the kernel with bpftool the moment their 201 arrives to
 *    check that. The same POSTs with enabled: false give the API + SQLite share. GET /status and
 *    GET /rules load (autocannon) at 0, 100 and all the rules.
 *  - engine: the same rules straight into a NativeEngine (no HTTP, no SQLite): the data plane's share,
 *    by table size.
 *  - bulk: --bulk-rules enabled rules created one at a time, then (fresh service) by --concurrency
 *    clients (--bulk-modes); total seconds until all are SYNCED. Stops at the first rule the data plane
 *    refuses (its count and error are reported) or after --phase-seconds. GET load at the count reached.
 *  - listing: --bulk-rules disabled rules (the API and store without the kernel), then GET load.
 * GET load: --load-connections (10) for --load-seconds (5) per endpoint and table size.
 * Rules are ALLOW rules on distinct executables: they take the engine's full write path (rule slot, the
 * app's list, generation bump) like LIMIT, without using licensed clamp slots, and unlike BLOCK they add
 * no socket-destroy pass over every namespace to each change.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { NativeEngine } from '../lib/engine/native.js';
import type { EngineRule } from '../lib/engine/engine.js';
import { run } from '../test/net/exec.js';
import { runBench, writeBenchResult } from './results.js';
import { NetClampService, ruleDraft, type RuleDraft, type StoredRule } from '../test/e2e/service.js';
import { fixed, formatTable, quantile } from './table.js';

const TARGET = { postP99Ms: 5, bulkSeconds: 10 };

interface LatencySummary {
  count: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
}

interface LoadResult {
  endpoint: string;
  rules: number;
  enabledRules: number;
  requestsPerSec: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  errors: number;
  non2xx: number;
}

interface BulkResult {
  mode: 'sequential' | 'concurrent';
  clients: number;
  requested: number;
  created: number;
  synced: number;
  seconds: number;
  stoppedBy: 'done' | 'refused' | 'time budget';
  refusal: { atCount: number; status: number; syncState: string | null; error: string } | null;
  /** Per 1000 rules already installed: the POST latency at that size (the cost grows with the table). */
  latencyByThousand: (LatencySummary & { from: number })[];
}

interface KernelCheck {
  ruleId: string;
  slot: number | null;
  inKernelAt201: boolean;
  detail: string;
}

function summarize(values: readonly number[]): LatencySummary {
  return { count: values.length, p50: quantile(values, 0.5), p90: quantile(values, 0.9), p99: quantile(values, 0.99), max: values.length ? Math.max(...values) : null };
}

/** Empty files with distinct inodes: one "executable" per rule, since at most 64 rules apply to one app. */
function makeAppFiles(count: number): { dir: string; paths: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'nc-bench-apps-'));
  const paths: string[] = [];
  for (let i = 0; i < count; i++) {
    const path = join(dir, `app-${i}`);
    writeFileSync(path, '');
    paths.push(path);
  }
  return { dir, paths };
}

function allowDraft(appPath: string, index: number, enabled = true): RuleDraft {
  return ruleDraft({ name: `bench ${index}`, app_path: appPath, action: 'ALLOW', enabled });
}

async function timedPost(service: NetClampService, draft: RuleDraft): Promise<{ ms: number; status: number; rule: StoredRule }> {
  const start = process.hrtime.bigint();
  const response = await service.request<StoredRule>('POST', '/rules', draft);
  return { ms: Number(process.hrtime.bigint() - start) / 1e6, status: response.status, rule: response.body };
}

// ---- kernel read-back -----------------------------------------------------------------------------

interface BpftoolMap {
  id: number;
  name?: string;
}

/** nc_ map ids by name (bpftool here reports no owning pids, so a new service's maps are told apart by id). */
async function ncMaps(): Promise<BpftoolMap[]> {
  const maps = JSON.parse((await run('bpftool', ['-j', 'map', 'show'])).stdout) as BpftoolMap[];
  return maps.filter((map) => map.name?.startsWith('nc_'));
}

/** The maps that appeared since `before` (the service started in between), by name. */
async function newMapIds(before: readonly BpftoolMap[]): Promise<Map<string, number>> {
  const known = new Set(before.map((map) => map.id));
  return new Map((await ncMaps()).filter((map) => !known.has(map.id)).map((map) => [map.name!, map.id]));
}

/** Little-endian hex bytes of an unsigned integer, for `bpftool map lookup key hex ...`. */
function hexBytes(value: bigint, bytes: number): string[] {
  return Array.from({ length: bytes }, (_, i) => ((value >> BigInt(8 * i)) & 0xffn).toString(16).padStart(2, '0'));
}

/** nc_app_key of a file: inode and the kernel's (major << 20) | minor of its device. */
function appKeyHex(path: string): string[] {
  const stat = statSync(path, { bigint: true });
  // glibc's dev_t encoding -> major/minor
  const major = ((stat.dev >> 8n) & 0xfffn) | ((stat.dev >> 32n) & ~0xfffn);
  const minor = (stat.dev & 0xffn) | ((stat.dev >> 12n) & ~0xffn);
  return [...hexBytes(stat.ino, 8), ...hexBytes((major << 20n) | minor, 4), ...hexBytes(0n, 4)];
}

interface LookupValue {
  formatted?: { value?: { count?: number; slots?: number[]; id?: number; in_use?: number } };
}

/** Reads the app's rule list and the rule slots it names straight from the kernel maps. */
async function kernelHasRule(maps: Map<string, number>, appPath: string, ruleId: string): Promise<KernelCheck> {
  const lists = maps.get('nc_lists');
  const rules = maps.get('nc_rules');
  if (lists === undefined || rules === undefined) return { ruleId, slot: null, inKernelAt201: false, detail: 'no new nc_lists/nc_rules map appeared with the service' };
  const list = await run('bpftool', ['-j', 'map', 'lookup', 'id', String(lists), 'key', 'hex', ...appKeyHex(appPath)], { allowFailure: true });
  if (list.code !== 0) return { ruleId, slot: null, inKernelAt201: false, detail: `no list for the app: ${list.stderr.trim() || list.stdout.trim()}` };
  const value = (JSON.parse(list.stdout) as LookupValue).formatted?.value;
  for (const slot of (value?.slots ?? []).slice(0, value?.count ?? 0)) {
    const entry = await run('bpftool', ['-j', 'map', 'lookup', 'id', String(rules), 'key', 'hex', ...hexBytes(BigInt(slot), 4)]);
    const rule = (JSON.parse(entry.stdout) as LookupValue).formatted?.value;
    if (String(rule?.id) === ruleId) return { ruleId, slot, inKernelAt201: true, detail: `list of the app names slot ${slot}, which holds rule ${ruleId}` };
  }
  return { ruleId, slot: null, inKernelAt201: false, detail: `list of the app (${value?.count ?? 0} slots) does not name rule ${ruleId}` };
}

// ---- GET load -------------------------------------------------------------------------------------

async function load(service: NetClampService, endpoint: '/status' | '/rules', rules: number, enabledRules: number, seconds: number, connections: number): Promise<LoadResult> {
  const result = await autocannon({
    url: service.baseUrl + endpoint, connections, duration: seconds,
    headers: { authorization: `Bearer ${service.token}` },
  });
  const outcome: LoadResult = {
    endpoint, rules, enabledRules, requestsPerSec: result.requests.average, latencyP50Ms: result.latency.p50,
    latencyP99Ms: result.latency.p99, errors: result.errors, non2xx: result.non2xx,
  };
  console.error(`  GET ${endpoint} with ${rules} rules (${enabledRules} enabled): ${fixed(outcome.requestsPerSec, 0)} req/s, p50 ${outcome.latencyP50Ms} ms, p99 ${outcome.latencyP99Ms} ms` +
    (outcome.errors || outcome.non2xx ? `, ${outcome.errors} errors, ${outcome.non2xx} non-2xx` : ''));
  return outcome;
}

// ---- phases ---------------------------------------------------------------------------------------

const ENGINE_STEP = 250;

/** applyRule alone, timed per ENGINE_STEP rules already installed. */
async function enginePhase(apps: string[], settings: Settings): Promise<(LatencySummary & { from: number })[]> {
  const engine = new NativeEngine();
  await engine.open();
  const steps: number[][] = [];
  try {
    for (let i = 0; i < settings.latencyRules; i++) {
      const rule: EngineRule = {
        id: i + 1, action: 'ALLOW', direction: 'BOTH', protocol: 'ANY', remoteAddress: '', remotePort: 0,
        rateDownBytesPerSec: null, rateUpBytesPerSec: null, limitScope: 'PER_APP', matchMode: 'EXACT_PATH',
        appPath: apps[i]!, priority: 100, resetCounters: true,
      };
      const start = process.hrtime.bigint();
      await engine.applyRule(rule);
      (steps[Math.floor(i / ENGINE_STEP)] ??= []).push(Number(process.hrtime.bigint() - start) / 1e6);
    }
  } finally {
    await engine.close();
  }
  const summaries = steps.map((values, step) => ({ from: step * ENGINE_STEP, ...summarize(values) }));
  for (const step of summaries) {
    console.error(`  engine.applyRule with ${step.from}-${step.from + step.count - 1} installed: p50 ${fixed(step.p50, 2)} p99 ${fixed(step.p99, 2)} max ${fixed(step.max, 2)} ms`);
  }
  return summaries;
}

interface Settings {
  latencyRules: number;
  bulkRules: number;
  concurrency: number;
  phaseSeconds: number;
  loadSeconds: number;
  loadConnections: number;
}

async function latencyPhase(apps: string[], settings: Settings, loads: LoadResult[]): Promise<{ latency: LatencySummary; storeOnly: LatencySummary; latenciesMs: number[]; kernelChecks: KernelCheck[] }> {
  const mapsBefore = await ncMaps();
  const service = await NetClampService.start();
  try {
    const latenciesMs: number[] = [];
    const kernelChecks: KernelCheck[] = [];
    const maps = await newMapIds(mapsBefore);
    const checkAt = new Set([0, Math.floor(settings.latencyRules / 2), settings.latencyRules - 1]);
    const loadAt = new Set([0, 100, settings.latencyRules]);
    for (let i = 0; i <= settings.latencyRules; i++) {
      if (loadAt.has(i)) {
        for (const endpoint of ['/status', '/rules'] as const) loads.push(await load(service, endpoint, i, i, settings.loadSeconds, settings.loadConnections));
      }
      if (i === settings.latencyRules) break;
      const posted = await timedPost(service, allowDraft(apps[i]!, i));
      if (posted.status !== 201 || posted.rule.sync_state !== 'SYNCED') {
        throw new Error(`rule ${i}: ${posted.status} ${JSON.stringify(posted.rule).slice(0, 300)}`);
      }
      latenciesMs.push(posted.ms);
      if (checkAt.has(i)) kernelChecks.push(await kernelHasRule(maps, apps[i]!, posted.rule.id));
    }
    // The same POSTs with enabled: false touch only the API and SQLite: the rest is the engine's share.
    const storeOnlyMs: number[] = [];
    for (let i = 0; i < settings.latencyRules; i++) {
      const posted = await timedPost(service, allowDraft(apps[i]!, i, false));
      if (posted.status !== 201) throw new Error(`disabled rule ${i}: ${posted.status} ${JSON.stringify(posted.rule).slice(0, 300)}`);
      storeOnlyMs.push(posted.ms);
    }
    const latency = summarize(latenciesMs);
    const storeOnly = summarize(storeOnlyMs);
    console.error(`  POST /rules -> 201 (= in the kernel) over ${latency.count} rules: p50 ${fixed(latency.p50, 2)} p90 ${fixed(latency.p90, 2)} p99 ${fixed(latency.p99, 2)} max ${fixed(latency.max, 2)} ms`);
    console.error(`  POST /rules of disabled rules (API + SQLite only): p50 ${fixed(storeOnly.p50, 2)} p90 ${fixed(storeOnly.p90, 2)} p99 ${fixed(storeOnly.p99, 2)} max ${fixed(storeOnly.max, 2)} ms`);
    for (const check of kernelChecks) console.error(`  kernel read-back at the 201 of rule ${check.ruleId}: ${check.inKernelAt201 ? 'present' : 'MISSING'} (${check.detail})`);
    return { latency, storeOnly, latenciesMs, kernelChecks };
  } finally {
    await service.dispose();
  }
}

async function bulkPhase(apps: string[], settings: Settings, clients: number, loads: LoadResult[]): Promise<BulkResult> {
  const service = await NetClampService.start();
  const mode = clients === 1 ? 'sequential' : 'concurrent';
  const result: BulkResult = {
    mode, clients, requested: settings.bulkRules, created: 0, synced: 0, seconds: 0, stoppedBy: 'done', refusal: null, latencyByThousand: [],
  };
  try {
    const byThousand: number[][] = [];
    let next = 0;
    let stop = false;
    const started = process.hrtime.bigint();
    const deadline = Date.now() + settings.phaseSeconds * 1000;
    const worker = async (): Promise<void> => {
      while (!stop && next < settings.bulkRules) {
        if (Date.now() > deadline) {
          stop = true;
          result.stoppedBy = 'time budget';
          break;
        }
        const index = next++;
        const installedBefore = result.created;
        const posted = await timedPost(service, allowDraft(apps[index]!, index));
        if (posted.status === 201) result.created++;
        if (posted.status !== 201 || posted.rule.sync_state !== 'SYNCED') {
          if (!stop) {
            stop = true;
            result.stoppedBy = 'refused';
            const body = posted.rule as unknown as { detail?: string };
            result.refusal = {
              atCount: installedBefore, status: posted.status, syncState: posted.rule.sync_state ?? null,
              error: posted.rule.sync_error ?? body.detail ?? JSON.stringify(posted.rule).slice(0, 300),
            };
          }
          break;
        }
        (byThousand[Math.floor(installedBefore / 1000)] ??= []).push(posted.ms);
      }
    };
    await Promise.all(Array.from({ length: clients }, worker));
    result.seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const listed = await service.expect<StoredRule[]>(200, 'GET', '/rules');
    result.synced = listed.filter((rule) => rule.sync_state === 'SYNCED').length;
    result.latencyByThousand = byThousand.map((values, thousand) => ({ from: thousand * 1000, ...summarize(values) }));
    console.error(`  ${mode} x${clients}: ${result.created} created, ${result.synced} SYNCED in ${fixed(result.seconds, 1)} s (${result.stoppedBy})` +
      (result.refusal ? `; refused at ${result.refusal.atCount} installed rules: ${result.refusal.status} ${result.refusal.syncState} ${result.refusal.error}` : ''));
    for (const step of result.latencyByThousand) {
      console.error(`    rules ${step.from}-${step.from + step.count - 1} installed: POST p50 ${fixed(step.p50, 1)} p99 ${fixed(step.p99, 1)} max ${fixed(step.max, 1)} ms`);
    }
    if (clients === 1) {
      for (const endpoint of ['/status', '/rules'] as const) loads.push(await load(service, endpoint, listed.length, result.synced, settings.loadSeconds, settings.loadConnections));
    }
    return result;
  } finally {
    await service.dispose();
  }
}

/** GET load over a large table of disabled rules: the API and the store, without the kernel's limits. */
async function listingPhase(apps: string[], settings: Settings, loads: LoadResult[]): Promise<number> {
  const service = await NetClampService.start();
  try {
    const started = Date.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < settings.bulkRules) {
        const index = next++;
        await service.expect(201, 'POST', '/rules', allowDraft(apps[index]!, index, false));
      }
    };
    await Promise.all(Array.from({ length: settings.concurrency }, worker));
    const seconds = (Date.now() - started) / 1000;
    console.error(`  ${settings.bulkRules} disabled rules created in ${fixed(seconds, 1)} s (x${settings.concurrency})`);
    for (const endpoint of ['/status', '/rules'] as const) loads.push(await load(service, endpoint, settings.bulkRules, 0, settings.loadSeconds, settings.loadConnections));
    return seconds;
  } finally {
    await service.dispose();
  }
}

function list(value: string): string[] {
  return value.split(',').map((item) => item.trim()).filter(Boolean);
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      phases: { type: 'string', default: 'latency,engine,bulk,listing' },
      'latency-rules': { type: 'string', default: '1000' },
      'bulk-rules': { type: 'string', default: '10000' },
      concurrency: { type: 'string', default: '8' },
      'bulk-modes': { type: 'string', default: 'sequential,concurrent' },
      'phase-seconds': { type: 'string', default: '75' },
      'load-seconds': { type: 'string', default: '5' },
      'load-connections': { type: 'string', default: '10' },
    },
  });
  if (process.getuid?.() !== 0) {
    console.error('bench: needs root (BPF)');
    return 2;
  }
  const phases = new Set(list(values.phases));
  const settings: Settings = {
    latencyRules: Number(values['latency-rules']),
    bulkRules: Number(values['bulk-rules']),
    concurrency: Number(values.concurrency),
    phaseSeconds: Number(values['phase-seconds']),
    loadSeconds: Number(values['load-seconds']),
    loadConnections: Number(values['load-connections']),
  };
  const started = new Date();
  const apps = makeAppFiles(Math.max(settings.latencyRules, settings.bulkRules));
  const loads: LoadResult[] = [];
  const bulk: BulkResult[] = [];
  let latency: Awaited<ReturnType<typeof latencyPhase>> | null = null;
  let listingCreateSeconds: number | null = null;
  let engineSteps: Awaited<ReturnType<typeof enginePhase>> = [];
  try {
    if (phases.has('latency')) latency = await latencyPhase(apps.paths, settings, loads);
    if (phases.has('engine')) engineSteps = await enginePhase(apps.paths, settings);
    if (phases.has('bulk')) {
      const modes = list(values['bulk-modes']);
      if (modes.includes('sequential')) bulk.push(await bulkPhase(apps.paths, settings, 1, loads));
      if (modes.includes('concurrent')) bulk.push(await bulkPhase(apps.paths, settings, settings.concurrency, loads));
    }
    if (phases.has('listing')) listingCreateSeconds = await listingPhase(apps.paths, settings, loads);
  } finally {
    rmSync(apps.dir, { recursive: true, force: true });
  }

  const sections: string[] = [];
  if (latency) {
    const l = latency.latency;
    const verified = latency.kernelChecks.filter((check) => check.inKernelAt201).length;
    sections.push(formatTable(['POST /rules -> 201 = in the kernel', 'rules', 'p50 ms', 'p90 ms', 'p99 ms (goal < 5)', 'max ms', 'kernel read-back at 201'], [[
      'sequential, ALLOW on distinct apps', String(l.count), fixed(l.p50, 2), fixed(l.p90, 2), fixed(l.p99, 2), fixed(l.max, 2), `${verified}/${latency.kernelChecks.length} present`,
    ], [
      'same, enabled: false (API + SQLite only)', String(latency.storeOnly.count), fixed(latency.storeOnly.p50, 2), fixed(latency.storeOnly.p90, 2),
      fixed(latency.storeOnly.p99, 2), fixed(latency.storeOnly.max, 2), '-',
    ]]));
  }
  if (engineSteps.length) {
    sections.push(formatTable(['engine.applyRule alone: rules installed', 'p50 ms', 'p99 ms', 'max ms'], engineSteps.map((step) => [
      `${step.from}-${step.from + step.count - 1}`, fixed(step.p50, 2), fixed(step.p99, 2), fixed(step.max, 2),
    ])));
  }
  if (bulk.length) {
    sections.push(formatTable(['bulk create (goal: 10,000 SYNCED < 10 s)', 'requested', 'created', 'SYNCED', 'seconds', 'stopped by', 'refusal'], bulk.map((b) => [
      `${b.mode} x${b.clients}`, String(b.requested), String(b.created), String(b.synced), fixed(b.seconds, 1), b.stoppedBy,
      b.refusal ? `at ${b.refusal.atCount}: ${b.refusal.status} ${b.refusal.syncState ?? ''} ${b.refusal.error}`.slice(0, 120) : '-',
    ])));
    for (const bulkRun of bulk) {
      sections.push(formatTable([`${bulkRun.mode} x${bulkRun.clients}: rules installed`, 'POST p50 ms', 'p99 ms', 'max ms'], bulkRun.latencyByThousand.map((step) => [
        `${step.from}-${step.from + step.count - 1}`, fixed(step.p50, 1), fixed(step.p99, 1), fixed(step.max, 1),
      ])));
    }
  }
  if (loads.length) {
    sections.push(formatTable(['GET (autocannon)', 'rules (enabled)', 'req/s', 'p50 ms', 'p99 ms', 'errors'], loads.map((entry) => [
      entry.endpoint, `${entry.rules} (${entry.enabledRules})`, fixed(entry.requestsPerSec, 0), String(entry.latencyP50Ms), String(entry.latencyP99Ms),
      String(entry.errors + entry.non2xx),
    ])) + `\n(${settings.loadConnections} connections, ${settings.loadSeconds} s each; autocannon runs in this process, on the same cores as the service)`);
  }
  const table = sections.join('\n\n');
  console.log('\n' + table);
  const file = await writeBenchResult('control', started, { target: TARGET, settings, latency, engine: engineSteps, bulk, listingCreateSeconds, loads, table });
  console.log(`\nwrote ${file}`);
  return 0;
}

runBench(main);
