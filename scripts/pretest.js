// Runs before `npm test`: system packages the tests need (as root, apt), the addon when neither a build
// nor a prebuild exists, the C test tools, and the TypeScript build. Any failure stops the test run with
// a message that says which step failed.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureSystemPackages, isRoot } from './system-deps.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const onCI = process.env.CI === 'true';

function step(name, action) {
  try {
    action();
  } catch (error) {
    console.error(`\npretest: ${name} FAILED: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  }
}

/** @type {import('./system-deps.js').SystemNeed[]} */
const testNeeds = [
  { what: 'iperf3', probe: ['iperf3', '--version'], packages: ['iperf3'] },
  { what: 'ip (iproute2)', probe: ['ip', '-V'], packages: ['iproute2'] },
  { what: 'ping', probe: ['ping', '-V'], packages: ['iputils-ping'] },
  { what: 'curl', probe: ['curl', '--version'], packages: ['curl'] },
  { what: 'bpftool', probe: ['bpftool', 'version'], packages: ['bpftool', 'linux-tools-common linux-tools-generic'] },
  { what: 'C compiler', probe: ['cc', '--version'], packages: ['build-essential'] },
  { what: 'make', probe: ['make', '--version'], packages: ['build-essential'] },
  { what: 'C++ compiler', probe: ['c++', '--version'], packages: ['build-essential'] },
  // The driver's shared header is compiled for LLP64 (Windows) too, so layout drift fails here.
  { what: 'mingw-w64', probe: ['x86_64-w64-mingw32-gcc', '--version'], packages: ['mingw-w64'] },
  // Needed to build the addon from source when no prebuild fits.
  { what: 'cmake', probe: ['cmake', '--version'], packages: ['cmake'] },
  { what: 'clang', probe: ['sh', '-c', 'command -v clang || command -v clang-14'], packages: ['clang'] },
  { what: 'pkg-config', probe: ['pkg-config', '--version'], packages: ['pkg-config'] },
  { what: 'libbpf', probe: ['pkg-config', '--exists', 'libbpf'], packages: ['libbpf-dev'] },
  { what: 'libelf', probe: ['pkg-config', '--exists', 'libelf'], packages: ['libelf-dev'] },
  { what: 'zlib', probe: ['pkg-config', '--exists', 'zlib'], packages: ['zlib1g-dev'] },
];

step('system packages', () => {
  if (process.platform !== 'linux') {
    console.log(`pretest: ${process.platform}: no system packages to check`);
    return;
  }
  if (!isRoot && !onCI) {
    console.log('pretest: not root: skipping apt; privileged tests will skip');
    return;
  }
  const unmet = ensureSystemPackages(testNeeds, { log: (line) => console.log(`pretest: ${line}`) });
  if (unmet.length > 0) throw new Error(`still missing: ${unmet.map((need) => need.what).join(', ')}`);
});

step('native addon', () => {
  const built = join(root, 'build', 'Release', 'netclamp.node');
  const prebuildDir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const hasPrebuild = existsSync(prebuildDir) && readdirSync(prebuildDir).some((name) => name.endsWith('.node'));
  if (existsSync(built)) {
    console.log('pretest: addon: build/Release/netclamp.node present');
    return;
  }
  if (hasPrebuild) {
    console.log(`pretest: addon: using prebuild in prebuilds/${process.platform}-${process.arch}`);
    return;
  }
  console.log('pretest: addon: no build and no prebuild, running npm run build:addon');
  execFileSync('npm', ['run', 'build:addon'], { cwd: root, stdio: 'inherit' });
  if (!existsSync(built)) throw new Error('npm run build:addon did not produce build/Release/netclamp.node');
});

step('test tools', () => {
  if (process.platform !== 'linux') return;
  const toolsDir = join(root, 'build', 'test-tools');
  mkdirSync(toolsDir, { recursive: true });
  const source = join(root, 'test', 'net', 'delay-relay.c');
  const output = join(toolsDir, 'delay-relay');
  if (existsSync(output) && statSync(output).mtimeMs >= statSync(source).mtimeMs) return;
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-pthread', '-o', output, source], { stdio: 'inherit' });
  console.log('pretest: built build/test-tools/delay-relay');
});

step('TypeScript build', () => {
  execFileSync(join(root, 'node_modules', '.bin', 'tsc'), ['-p', join(root, 'tsconfig.json')], {
    cwd: root,
    stdio: 'inherit',
  });
  console.log('pretest: tsc done');
});
