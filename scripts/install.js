#!/usr/bin/env node
// The package's `install` script (runs on `npm ci` / `npm install`): use a matching prebuild when the
// package ships one; otherwise build the addon with cmake-js, first installing the Debian build
// dependencies when we are root on Debian and some are missing.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'package.json'));

function log(message) {
  console.log(`[netclamp install] ${message}`);
}

function hasPrebuild() {
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  return existsSync(dir) && readdirSync(dir).some((name) => name.endsWith('.node'));
}

function onPath(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

// Ubuntu's /usr/sbin/bpftool is a wrapper that fails without the running kernel's tools package, so
// "present" means a bpftool that actually runs.
function bpftoolPresent() {
  const candidates = ['bpftool', '/usr/sbin/bpftool', '/usr/local/sbin/bpftool'];
  const tools = '/usr/lib/linux-tools';
  if (existsSync(tools)) for (const d of readdirSync(tools)) candidates.push(join(tools, d, 'bpftool'));
  return candidates.some((c) => spawnSync(c, ['version'], { stdio: 'ignore' }).status === 0);
}

function aptKnows(pkg) {
  return spawnSync('apt-cache', ['show', '--no-all-versions', pkg], { stdio: 'ignore' }).status === 0;
}

/** Debian calls it bpftool; Ubuntu ships it in linux-tools packages. */
function bpftoolPackages() {
  if (aptKnows('bpftool')) return ['bpftool'];
  return ['linux-tools-common', 'linux-tools-generic', `linux-tools-${spawnSync('uname', ['-r']).stdout?.toString().trim()}`]
    .filter((p) => aptKnows(p));
}

function pkgConfigHas(module) {
  return onPath('pkg-config') && spawnSync('pkg-config', ['--exists', module], { stdio: 'ignore' }).status === 0;
}

/** Debian packages for what the Linux build needs and this machine lacks. */
function missingLinuxPackages() {
  const missing = [];
  const clang = onPath('clang') || [18, 17, 16, 15, 14].some((v) => onPath(`clang-${v}`));
  if (!clang) missing.push('clang', 'llvm');
  if (!bpftoolPresent()) missing.push('bpftool');  // resolved to the distribution's package name later
  if (!onPath('cmake')) missing.push('cmake');
  if (!onPath('make')) missing.push('make');
  if (!onPath('g++')) missing.push('g++');
  if (!onPath('pkg-config')) missing.push('pkg-config');
  if (!existsSync('/usr/include/bpf/libbpf.h') || !pkgConfigHas('libbpf')) missing.push('libbpf-dev');
  if (!existsSync('/usr/include/libelf.h') && !pkgConfigHas('libelf')) missing.push('libelf-dev');
  if (!existsSync('/usr/include/zlib.h') && !pkgConfigHas('zlib')) missing.push('zlib1g-dev');
  return [...new Set(missing)];
}

function run(command, args, options = {}) {
  log(`$ ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, { stdio: 'inherit', ...options });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function installLinuxDependencies() {
  const missing = missingLinuxPackages();
  if (missing.length === 0) return;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const isDebian = existsSync('/etc/debian_version');
  if (!isRoot || !isDebian || !onPath('apt-get')) {
    console.error(
      `[netclamp install] cannot build the native addon: missing build dependencies.\n` +
        `  Install them (Debian/Ubuntu): sudo apt-get install -y ${missing.join(' ')}\n` +
        `  then run: npm run build:addon` +
        (isDebian ? '' : `\n  (on other distributions install the equivalents of: ${missing.join(', ')})`),
    );
    process.exit(1);
  }
  log(`installing missing build dependencies: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (run('apt-get', ['update'], { env }) !== 0) {
    console.error('[netclamp install] apt-get update failed');
    process.exit(1);
  }
  const packages = missing.flatMap((p) => (p === 'bpftool' ? bpftoolPackages() : [p]));
  if (run('apt-get', ['install', '-y', '--no-install-recommends', ...packages], { env }) !== 0) {
    console.error(`[netclamp install] apt-get install failed for: ${packages.join(' ')}`);
    process.exit(1);
  }
  const still = missingLinuxPackages();
  if (still.length > 0) {
    console.error(`[netclamp install] still missing after apt-get: ${still.join(' ')}`);
    process.exit(1);
  }
}

function main() {
  if (hasPrebuild()) {
    log(`using prebuilds/${process.platform}-${process.arch}`);
    return;
  }
  if (process.platform === 'linux') installLinuxDependencies();
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  } catch {
    console.error('[netclamp install] cmake-js is not installed (it is a dependency: run npm ci first)');
    process.exit(1);
  }
  const status = run(process.execPath, [cmakeJs, 'compile', '--out', 'build'], { cwd: root });
  if (status !== 0) {
    console.error('[netclamp install] building the native addon failed; see the output above');
    process.exit(status);
  }
  log('built build/Release/netclamp.node');
}

main();
