// `npm test`: one node:test invocation over every compiled test file, one file at a time (real-traffic
// tests must never overlap), spec reporter, exit code passed through. Under CI=true a skipped test is a
// failure too: privileged tests already throw there, and this double-checks the closing summary.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const onCI = process.env.CI === 'true';

const args = [
  '--test',
  '--test-concurrency=1',
  // A hung real-traffic test must fail, not stall the run. The limit applies to each file as a whole
  // too, and the shaping file runs ~37 iperf3 transfers (about 5 minutes).
  '--test-timeout=900000',
  '--test-reporter=spec',
  '--test-reporter-destination=stdout',
  join('dist', 'test') + '/',
  ...process.argv.slice(2),
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
