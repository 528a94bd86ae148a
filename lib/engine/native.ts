/**
 * The native engine: the addon (build/Release/netclamp.node or prebuilds/<platform>-<arch>/) behind the
 * `Engine` contract. The addon does the kernel work off the event loop; this wrapper loads it, hands it
 * each rule with its fingerprint, and turns its structured errors (code/errno/syscall) into EngineErrors.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  EngineError,
  fingerprintOf,
  type Engine,
  type CompetingShaper,
  type ConnectionEntry,
  type EngineCounters,
  type EngineRule,
  type EngineStatus,
  type ExecutableActivity,
  type InstalledRule,
  type PatternWatch,
  type ProcessActivity,
  type WatchedIdentities,
} from './engine.js';
import { linuxCompetingShapers } from '../services/competing-shapers.js';
import type { NativeHwidInputs } from '../license/hwid.js';

const require = createRequire(import.meta.url);

/** Traffic by executable identity and by process since open(), for the service's /apps view. */
export interface ActivityCounters {
  apps: Array<{ dev: number; ino: number; bytesUp: number; bytesDown: number; blocked: number }>;
  processes: Array<{ pid: number; dev: number; ino: number; bytesUp: number; bytesDown: number; blocked: number }>;
}

/** What the addon's `Engine` class offers (binding/src/common/addon.cc). */
interface AddonEngine {
  open(exemptPid: number): Promise<void>;
  close(): Promise<void>;
  status(): Omit<EngineStatus, 'platform'>;
  applyRule(rule: EngineRule & { fingerprint: string }): Promise<void>;
  removeRule(id: number): Promise<void>;
  installedRules(): Promise<InstalledRule[]>;
  readCounters(): Promise<EngineCounters>;
  readActivity(): Promise<ActivityCounters>;
  competingShapers(): Promise<CompetingShaper[]>;
  connections(): Promise<ConnectionEntry[]>;
  watchPatterns(watches: PatternWatch[]): Promise<WatchedIdentities[]>;
  hwidInputs(): Promise<NativeHwidInputs>;
}

interface Addon {
  Engine: new () => AddonEngine;
  platform: string;
}

const BUILD_DEPS_LINUX = 'cmake, make, g++, clang, llvm, bpftool, libbpf-dev, libelf-dev, zlib1g-dev, pkg-config';

/** The directory holding NetClamp's package.json, from this file's place in lib/ or dist/lib/. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest)) {
      try {
        if ((JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'netclamp') return dir;
      } catch {
        // not ours; keep walking up
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new EngineError('ADDON_MISSING', 'cannot find the netclamp package root above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

/** Loads the addon with node-gyp-build, or throws ADDON_MISSING saying what is missing and how to fix it. */
export function loadAddon(root: string = packageRoot()): Addon {
  try {
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
    return nodeGypBuild(root) as Addon;
  } catch (error) {
    const reason = (error as Error).message;
    let fix: string;
    if (/No native build was found/i.test(reason)) {
      fix = process.platform === 'linux'
        ? `run \`npm run build:addon\` in ${root} (needs ${BUILD_DEPS_LINUX}; as root \`node scripts/install.js\` installs them)`
        : `run \`npm run build:addon\` in ${root}, or install a package that ships prebuilds/${process.platform}-${process.arch}/`;
    } else if (/cannot open shared object file/i.test(reason)) {
      fix = 'install the shared library named above (Debian: `apt-get install libbpf1 libelf1 zlib1g`) or rebuild with `npm run build:addon`';
    } else {
      fix = `rebuild it with \`npm run build:addon\` in ${root}`;
    }
    throw new EngineError('ADDON_MISSING', `the NetClamp native addon cannot be loaded: ${reason.split('\n')[0]}; ${fix}`);
  }
}

function toEngineError(error: unknown): EngineError {
  if (error instanceof EngineError) return error;
  const e = error as { code?: unknown; errno?: unknown; syscall?: unknown; message?: unknown };
  const code = typeof e.code === 'string' ? e.code : 'EINTERNAL';
  const errno = typeof e.errno === 'number' ? e.errno : undefined;
  const message = typeof e.message === 'string' ? e.message : String(error);
  const engineError = new EngineError(code, message, errno);
  if (typeof e.syscall === 'string') Object.defineProperty(engineError, 'syscall', { value: e.syscall, enumerable: true });
  return engineError;
}

async function guarded<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw toEngineError(error);
  }
}

export interface NativeEngineOptions {
  /** The process whose traffic no rule touches (the service itself, so a BLOCK never cuts off the API). */
  exemptPid?: number;
  /** Where to look for the addon; defaults to the package root. */
  packageRoot?: string;
}

export class NativeEngine implements Engine {
  private readonly native: AddonEngine;
  private readonly exemptPid: number;
  /** Linux only: the exec notifications behind it exist there; WFP has no equivalent (docs/windows.md). */
  readonly watchPatterns?: (watches: PatternWatch[]) => Promise<WatchedIdentities[]>;

  constructor(options: NativeEngineOptions = {}) {
    const addon = loadAddon(options.packageRoot ?? packageRoot());
    try {
      this.native = new addon.Engine();
    } catch (error) {
      throw toEngineError(error);
    }
    this.exemptPid = options.exemptPid ?? process.pid;
    if (addon.platform === 'linux') this.watchPatterns = (watches) => guarded(() => this.native.watchPatterns(watches));
  }

  open(): Promise<void> {
    return guarded(() => this.native.open(this.exemptPid));
  }

  close(): Promise<void> {
    return guarded(() => this.native.close());
  }

  status(): EngineStatus {
    return { platform: process.platform, ...this.native.status() };
  }

  applyRule(rule: EngineRule): Promise<void> {
    return guarded(() => this.native.applyRule({ ...rule, fingerprint: fingerprintOf(rule) }));
  }

  removeRule(id: number): Promise<void> {
    return guarded(() => this.native.removeRule(id));
  }

  installedRules(): Promise<InstalledRule[]> {
    return guarded(() => this.native.installedRules());
  }

  readCounters(): Promise<EngineCounters> {
    return guarded(() => this.native.readCounters());
  }

  /** Not part of the Engine contract yet: per-executable and per-process traffic for /apps. */
  readActivity(): Promise<ActivityCounters> {
    return guarded(() => this.native.readActivity());
  }

  async appActivity(): Promise<ExecutableActivity[]> {
    return (await this.readActivity()).apps;
  }

  async processActivity(): Promise<ProcessActivity[]> {
    const activity = await this.readActivity();
    return activity.processes.map(({ pid, bytesUp, bytesDown, blocked }) => ({ pid, bytesUp, bytesDown, blocked }));
  }

  connections(): Promise<ConnectionEntry[]> {
    return guarded(() => this.native.connections());
  }

  /** Windows: MachineGuid and the SMBIOS UUID for the HWID (lib/license/hwid.ts looks for this name); Linux: empty. */
  hwidInputs(): Promise<NativeHwidInputs> {
    return guarded(() => this.native.hwidInputs());
  }

  /** Windows: the addon looks (WFP callouts, NDIS LWFs); Linux: qdiscs, cgroup programs, processes. */
  async competingShapers(): Promise<CompetingShaper[]> {
    const fromAddon = await guarded(() => this.native.competingShapers());
    return process.platform === 'linux' ? [...fromAddon, ...await linuxCompetingShapers()] : fromAddon;
  }
}
