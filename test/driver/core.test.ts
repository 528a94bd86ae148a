/**
 * The Windows driver's portable core, built and unit-tested on Linux (no root needed), plus proof that the
 * shared driver/addon header has one layout under LP64 (cc) and LLP64 (mingw-w64), in C and C++.
 *
 * The C tests live in driver/core/tests and end with "N passed, N failed"; this suite builds them into
 * build/driver-tests/ (ignored by git) with `make -C driver/core` and fails when any C test fails.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';

// dist/test/driver/core.test.js -> the repository root
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const coreDir = join(repoRoot, 'driver', 'core');
const buildDir = join(repoRoot, 'build', 'driver-tests');
const onCI = process.env.CI === 'true';

interface RunResult {
  code: number;
  output: string;
}

/** Runs a command to completion; never throws on a non-zero exit, so the caller can show the output. */
function run(command: string, args: string[], cwd = repoRoot): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    execFile(command, args, { cwd, maxBuffer: 16 * 1024 * 1024, timeout: 240_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolvePromise({ code, output: `${stdout}${stderr}` });
    });
  });
}

async function haveTool(tool: string): Promise<boolean> {
  return (await run('sh', ['-c', `command -v ${tool}`])).code === 0;
}

/** mingw-w64 is a build dependency here; off CI its absence skips, on CI it fails. */
async function requireTool(t: TestContext, tool: string): Promise<boolean> {
  if (await haveTool(tool)) return true;
  const reason = `needs ${tool} (apt-get install mingw-w64)`;
  if (onCI) throw new Error(`${reason}, and CI=true forbids skipping`);
  t.skip(reason);
  return false;
}

function make(target: string): Promise<RunResult> {
  // Serial (no -j): the machine is shared with throughput measurements.
  return run('make', ['-C', coreDir, `BUILD_DIR=${buildDir}`, target]);
}

describe('driver portable core', () => {
  test('C unit tests build with -Wall -Wextra -Werror and all pass', async () => {
    const build = await make('all');
    assert.equal(build.code, 0, `building the core tests failed:\n${build.output}`);

    const result = await run(join(buildDir, 'core_tests'), []);
    const summary = /^(\d+) passed, (\d+) failed$/m.exec(result.output);
    assert.ok(summary, `no "N passed, N failed" line in the output:\n${result.output}`);
    const [passed, failed] = [Number(summary[1]), Number(summary[2])];
    assert.equal(failed, 0, `${failed} C test(s) failed:\n${result.output}`);
    assert.equal(result.code, 0, `core_tests exited ${result.code}:\n${result.output}`);
    // Guards against a runner that silently stops registering suites.
    assert.ok(passed >= 40, `only ${passed} C tests ran:\n${result.output}`);
  });

  test('the C runner reports failure when nothing matches (its exit code is trusted above)', async () => {
    const build = await make('all');
    assert.equal(build.code, 0, build.output);
    const result = await run(join(buildDir, 'core_tests'), ['no test has this name']);
    assert.match(result.output, /^0 passed, 0 failed$/m);
    assert.notEqual(result.code, 0);
  });

  test('the shared header compiles with one layout for LP64 and LLP64, as C99, C11 and C++', async (t) => {
    if (!(await requireTool(t, 'x86_64-w64-mingw32-gcc'))) return;
    if (!(await requireTool(t, 'x86_64-w64-mingw32-g++'))) return;
    const result = await make('abi');
    assert.equal(result.code, 0, `header layout check failed:\n${result.output}`);
  });

  test('the core itself compiles for Windows x64 with mingw-w64 and no warnings', async (t) => {
    if (!(await requireTool(t, 'x86_64-w64-mingw32-gcc'))) return;
    const result = await make('core-win');
    assert.equal(result.code, 0, `mingw build of the core failed:\n${result.output}`);
  });

  test("the header's static asserts bite: a false one stops the build in C99, C11 and C++", async () => {
    await mkdir(buildDir, { recursive: true });
    const source = join(buildDir, 'static_assert_negative.c');
    await writeFile(
      source,
      `#include "${join(repoRoot, 'driver', 'include', 'netclamp_ioctl.h')}"\n` +
        'NC_STATIC_ASSERT(sizeof(nc_app_limit_request) == 47, "deliberately false");\n',
    );
    for (const [compiler, flags] of [
      ['cc', ['-std=c11']],
      ['cc', ['-std=c99']],
      ['c++', ['-x', 'c++', '-std=c++11']],
    ] as const) {
      const result = await run(compiler, [...flags, '-c', source, '-o', '/dev/null']);
      assert.notEqual(result.code, 0, `${compiler} ${flags.join(' ')} accepted a false static assert`);
    }
    // and the true ones compile, so the failures above are the assert, not the setup
    await writeFile(source, `#include "${join(repoRoot, 'driver', 'include', 'netclamp_ioctl.h')}"\n` +
      'NC_STATIC_ASSERT(sizeof(nc_app_limit_request) == 48, "true");\n');
    const ok = await run('cc', ['-std=c99', '-c', source, '-o', '/dev/null']);
    assert.equal(ok.code, 0, ok.output);
  });
});
