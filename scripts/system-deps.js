// Shared helper: make sure some OS packages are present on Debian/Ubuntu, installing only what is missing
// with apt (one `apt-get update`, and only when something must be installed). Used by scripts/pretest.js;
// scripts/install.js may use it too.
import { execFileSync, spawnSync } from 'node:child_process';

/**
 * A need is satisfied when its probe command runs successfully; otherwise the first candidate package
 * that apt knows is installed (package names differ between Debian and Ubuntu, e.g. bpftool); a candidate
 * may list several space-separated packages.
 * @typedef {{ what: string, probe: string[], packages: string[] }} SystemNeed
 */

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function commandSucceeds(argv) {
  const result = spawnSync(argv[0], argv.slice(1), { stdio: 'ignore', timeout: 20_000 });
  return result.status === 0;
}

function hasApt() {
  return commandSucceeds(['apt-get', '--version']);
}

function aptKnows(pkg) {
  const result = spawnSync('apt-cache', ['show', '--no-all-versions', pkg], { stdio: 'ignore' });
  return result.status === 0;
}

/**
 * Returns the needs that are still unmet after trying to install them. Never throws for a missing
 * privilege: the caller decides whether an unmet need is fatal.
 * @param {SystemNeed[]} needs
 * @param {{ log?: (line: string) => void }} [options]
 */
export function ensureSystemPackages(needs, options = {}) {
  const log = options.log ?? ((line) => console.log(line));
  const missing = needs.filter((need) => !commandSucceeds(need.probe));
  if (missing.length === 0) return [];
  const names = missing.map((need) => need.what).join(', ');
  if (process.platform !== 'linux' || !hasApt()) {
    log(`system packages: not on an apt system, cannot install: ${names}`);
    return missing;
  }
  if (!isRoot) {
    log(`system packages: not root, skipping apt (missing: ${names})`);
    return missing;
  }
  log(`system packages: installing for ${names}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  const packages = [];
  for (const need of missing) {
    // A candidate may name several packages ("linux-tools-common linux-tools-generic").
    const candidate = need.packages.find((names) => names.split(' ').every(aptKnows));
    if (!candidate) throw new Error(`no apt package provides ${need.what} (tried ${need.packages.join(' | ')})`);
    packages.push(...candidate.split(' '));
  }
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...new Set(packages)], {
    stdio: 'inherit',
    env,
  });
  return missing.filter((need) => !commandSucceeds(need.probe));
}
