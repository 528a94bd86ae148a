/** Where the service keeps its token, database, config and log (see docs/api.md, "Data directory"). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface DataDirSources {
  flag?: string | undefined;
  env?: NodeJS.ProcessEnv;
  platform?: NodeJS.Platform;
  isRoot?: boolean;
}

export function resolveDataDir(sources: DataDirSources = {}): string {
  const env = sources.env ?? process.env;
  if (sources.flag !== undefined && sources.flag !== '') return path.resolve(sources.flag);
  if (env.NETCLAMP_DATA_DIR !== undefined && env.NETCLAMP_DATA_DIR !== '') return path.resolve(env.NETCLAMP_DATA_DIR);
  const platform = sources.platform ?? process.platform;
  if (platform === 'win32') return path.join(env.ProgramData ?? 'C:\\ProgramData', 'NetClamp');
  const isRoot = sources.isRoot ?? (typeof process.getuid === 'function' && process.getuid() === 0);
  if (isRoot) return '/var/lib/netclamp';
  const stateHome = env.XDG_STATE_HOME !== undefined && path.isAbsolute(env.XDG_STATE_HOME)
    ? env.XDG_STATE_HOME
    : path.join(os.homedir(), '.local', 'state');
  return path.join(stateHome, 'netclamp');
}

/** Creates the directory (and parents) if missing; a directory we create is 0700: it holds the token. */
export function ensureDataDir(dir: string): void {
  if (fs.existsSync(dir)) {
    if (!fs.statSync(dir).isDirectory()) throw new Error(`data dir ${dir} exists and is not a directory`);
    return;
  }
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (process.platform !== 'win32') fs.chmodSync(dir, 0o700);
}
