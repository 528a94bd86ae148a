/**
 * Gate for tests that need root (BPF, network namespaces, real traffic).
 * Off CI without root they skip with a one-line reason; under CI=true a missing privilege is a failure,
 * because CI runs as root and a skip there would hide a broken data plane.
 */
import type { TestContext } from 'node:test';

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
export const onCI = process.env.CI === 'true';

/** Returns true when the test may go on; otherwise marks it skipped (or throws under CI). */
export function requireRoot(t: TestContext, what = 'BPF and network namespaces'): boolean {
  if (isRoot) return true;
  const reason = `needs root for ${what}`;
  if (onCI) throw new Error(`${reason}, and CI=true forbids skipping`);
  t.skip(reason);
  return false;
}

/** Options for `describe`/`test` of a whole privileged suite: skip off CI without root, fail on CI. */
export function privilegedSuite(what = 'BPF and network namespaces'): { skip?: string } {
  if (isRoot) return {};
  if (onCI) throw new Error(`needs root for ${what}, and CI=true forbids skipping`);
  return { skip: `needs root for ${what}` };
}
