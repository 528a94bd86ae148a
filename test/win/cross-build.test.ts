/**
 * `npm run build:win-cross` on Linux: the addon's Windows sources compile and link with mingw-w64 into a
 * PE DLL that exports napi_register_module_v1 and imports fwpuclnt.dll and iphlpapi.dll. A Windows
 * compile or link error therefore fails npm test here. No root needed. Without mingw-w64 it skips off CI
 * and fails under CI=true.
 */
import { execFile } from 'node:child_process';
import { rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const output = join(repoRoot, 'build', 'win-cross', 'netclamp.node');
const onCI = process.env.CI === 'true';

function run(command: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((done) => {
    execFile(command, args, { cwd: repoRoot, maxBuffer: 32 * 1024 * 1024, timeout: 150_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      done({ code, output: `${stdout}${stderr}` });
    });
  });
}

test('build:win-cross yields a PE netclamp.node exporting the N-API entry and importing WFP + IP Helper', async (t) => {
  for (const tool of ['x86_64-w64-mingw32-g++-posix', 'x86_64-w64-mingw32-dlltool', 'x86_64-w64-mingw32-objdump']) {
    if ((await run('sh', ['-c', `command -v ${tool}`])).code !== 0) {
      const reason = `needs ${tool} (apt-get install mingw-w64)`;
      if (onCI) throw new Error(`${reason}, and CI=true forbids skipping`);
      t.skip(reason);
      return;
    }
  }
  // A stale binary from an earlier run must not pass for a broken build.
  await rm(output, { force: true });
  const build = await run(process.execPath, [join(repoRoot, 'scripts', 'build-win-cross.js')]);
  assert.equal(build.code, 0, `build:win-cross failed:\n${build.output}`);
  assert.ok((await stat(output)).size > 0);

  const dump = await run('x86_64-w64-mingw32-objdump', ['-p', output]);
  assert.equal(dump.code, 0, dump.output);
  assert.match(dump.output, /file format pei-x86-64/);
  assert.match(dump.output, /Characteristics [^\n]*\n(?:[^\n]*\n)*?\s*DLL/, 'not a DLL');
  assert.match(dump.output, /\]\s+napi_register_module_v1\b/, 'napi_register_module_v1 is not exported');
  const dlls = [...dump.output.matchAll(/DLL Name: (\S+)/g)].map((m) => m[1].toLowerCase());
  for (const dll of ['fwpuclnt.dll', 'iphlpapi.dll', 'node.exe', 'advapi32.dll'])
    assert.ok(dlls.includes(dll), `${dll} is not imported (imports: ${dlls.join(', ')})`);
  // Linked statically: no MinGW runtime DLL may be needed next to node.exe.
  for (const dll of dlls) assert.doesNotMatch(dll, /libstdc\+\+|libgcc|libwinpthread/, `${dll} would be needed at run time`);
});
