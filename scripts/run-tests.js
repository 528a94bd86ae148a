// `npm test`: one node:test invocation over every compiled test file, one file at a time (real-traffic
// tests must never overlap), spec reporter, exit code passed through. Under CI=true a skipped test is a
// failure too: privileged tests already throw there, and this double-checks the closing summary.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const onCI = process.env.CI === 'true';

/** Compiled test files only: given a directory, node 20 would also run every helper module as a test. */
function testFiles(dir) {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((entry) => {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) return testFiles(path);
      return entry.name.endsWith('.test.js') ? [relative(root, path)] : [];
    })
    .sort();
}

const files = testFiles(join(root, 'dist', 'test'));
if (files.length === 0) {
  console.error('run-tests: no dist/test/**/*.test.js; did the TypeScript build (npm run pretest) run?');
  process.exit(1);
}
const startedAt = Date.now();

const args = [
  '--test',
  '--test-concurrency=1',
  // A hung real-traffic test must fail, not stall the run. The limit applies to each file as a whole
  // too, and the shaping file runs ~37 iperf3 transfers (about 5 minutes).
  '--test-timeout=900000',
  '--test-reporter=spec',
  '--test-reporter-destination=stdout',
  ...process.argv.slice(2),
  ...files,
];

const child = spawn(process.execPath, args, { cwd: root, stdio: ['inherit', 'pipe', 'inherit'] });

let tail = '';
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  // The summary is at the end; keeping a bounded tail is enough to read it.
  tail = (tail + chunk.toString('utf8')).slice(-20000);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => child.kill(signal));
}

child.on('exit', (code, signal) => {
  const exitCode = code ?? (signal ? 1 : 0);
  console.log(`run-tests: ${files.length} files in ${((Date.now() - startedAt) / 1000).toFixed(0)} s`);
  const count = (label) => {
    const matches = [...tail.matchAll(new RegExp(`^\\S*\\s*${label} (\\d+)\\s*$`, 'gm'))];
    return matches.length > 0 ? Number(matches[matches.length - 1][1]) : null;
  };
  const skipped = count('skipped');
  const todo = count('todo');
  if (onCI) {
    if (skipped === null) {
      console.error('run-tests: CI=true but no test summary was found; failing');
      process.exit(exitCode || 1);
    }
    if (skipped > 0 || (todo ?? 0) > 0) {
      console.error(`run-tests: CI=true forbids skipped tests: ${skipped} skipped, ${todo ?? 0} todo`);
      process.exit(1);
    }
  }
  process.exit(exitCode);
});
