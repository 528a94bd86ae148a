// `npm run build:win-cross`: compile and link the addon's Windows sources (binding/src/common +
// binding/src/win) with mingw-w64 on Linux into build/win-cross/netclamp.node, a PE DLL. A compile and
// link check that runs on every Linux CI job; release binaries come from MSVC on Windows runners.
// Serial on purpose (one compiler at a time): the machine is shared with throughput measurements.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const outDir = join(root, 'build', 'win-cross');
const objDir = join(outDir, 'obj');

const cxx = process.env.NETCLAMP_MINGW_CXX ?? 'x86_64-w64-mingw32-g++-posix';  // posix threads: std::thread, std::mutex
const dlltool = process.env.NETCLAMP_MINGW_DLLTOOL ?? 'x86_64-w64-mingw32-dlltool';

function run(command, args) {
  console.log(`build-win-cross: ${basename(command)} ${args.map((a) => relative(root, a) || a).join(' ')}`);
  try {
    execFileSync(command, args, { cwd: root, stdio: 'inherit' });
  } catch (error) {
    if (error.code === 'ENOENT') {
      console.error(`build-win-cross: ${command} not found (apt-get install mingw-w64)`);
    }
    process.exit(1);
  }
}

const addonApiDir = require('node-addon-api').include_dir;
const headers = require('node-api-headers');

mkdirSync(objDir, { recursive: true });

// node.exe's N-API exports as an import library: the addon resolves them from the host process at load.
const importLib = join(outDir, 'libnode.a');
run(dlltool, ['-d', headers.def_paths.node_api_def, '-l', importLib, '-D', 'node.exe']);

const winDir = join(root, 'binding', 'src', 'win');
const sources = [
  join(root, 'binding', 'src', 'common', 'addon.cc'),
  join(root, 'binding', 'src', 'common', 'errors.cc'),
  ...readdirSync(winDir).filter((f) => f.endsWith('.cc')).sort().map((f) => join(winDir, f)),
];

const cxxFlags = [
  '-std=c++17', '-O2', '-Wall', '-Wextra', '-Werror', '-Wno-cast-function-type',
  '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-DBUILDING_NODE_EXTENSION',
  '-D_WIN32_WINNT=0x0A00', '-DWINVER=0x0A00', '-DWIN32_LEAN_AND_MEAN', '-DNOMINMAX',
  `-I${addonApiDir}`, `-I${headers.include_dir}`, `-I${join(root, 'binding', 'src', 'common')}`,
];

const objects = [];
for (const source of sources) {
  const object = join(objDir, `${basename(dirname(source))}_${basename(source, '.cc')}.o`);
  run(cxx, [...cxxFlags, '-c', source, '-o', object]);
  objects.push(object);
}

const output = join(outDir, 'netclamp.node');
run(cxx, [
  '-shared', '-o', output, ...objects,
  // Everything the C++ runtime needs inside the DLL: no libstdc++-6.dll / libwinpthread-1.dll at run time.
  '-static', '-static-libgcc', '-static-libstdc++',
  `-L${outDir}`, '-lnode',
  '-lfwpuclnt', '-liphlpapi', '-lws2_32', '-ladvapi32', '-lrpcrt4',
  '-Wl,--no-undefined',
]);
console.log(`build-win-cross: ${relative(root, output)} (${statSync(output).size} bytes)`);
