/**
 * The portable half of the Windows WFP backend (binding/src/win/wfp_plan.cc: weights, filter keys,
 * CIDR -> mask, rule -> filter set) compiled with the host C++ compiler under ASan/UBSan and run here.
 * No Windows and no root needed. The C++ program ends with "N passed, M failed".
 */
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const buildDir = join(repoRoot, 'build', 'win-plan-test');
const onCI = process.env.CI === 'true';

function run(command: string, args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((done) => {
    execFile(command, args, { cwd: repoRoot, maxBuffer: 16 * 1024 * 1024, timeout: 180_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      done({ code, output: `${stdout}${stderr}` });
    });
  });
}

test('WFP rule planning: weights, keys, masks and filter sets', async (t) => {
  if ((await run('sh', ['-c', 'command -v c++'])).code !== 0) {
    if (onCI) throw new Error('needs a C++ compiler (c++), and CI=true forbids skipping');
    t.skip('needs a C++ compiler (c++)');
    return;
  }
  await mkdir(buildDir, { recursive: true });
  const binary = join(buildDir, 'wfp_plan_test');
  const build = await run('c++', [
    '-std=c++17', '-Wall', '-Wextra', '-Werror', '-O1', '-g', '-fsanitize=address,undefined',
    '-fno-sanitize-recover=all', '-o', binary,
    'test/win/wfp_plan_test.cc', 'binding/src/win/wfp_plan.cc', 'binding/src/win/win_errors.cc',
    'binding/src/win/smbios.cc', 'binding/src/common/errors.cc',
  ]);
  assert.equal(build.code, 0, `building the plan tests failed:\n${build.output}`);
  const result = await run(binary, []);
  const summary = /^(\d+) passed, (\d+) failed$/m.exec(result.output);
  assert.ok(summary, `no summary line in the output:\n${result.output}`);
  assert.equal(Number(summary[2]), 0, result.output);
  assert.equal(result.code, 0, result.output);
  assert.ok(Number(summary[1]) >= 200, `only ${summary[1]} checks ran:\n${result.output}`);
});
