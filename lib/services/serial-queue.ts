/**
 * Runs async work one piece at a time, in submission order; a failure of one piece does not stop the
 * next. The rule and quota services route every write through one, so the database and the kernel
 * never see two writers interleave.
 */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(work: () => Promise<T>): Promise<T> {
    const result = this.tail.then(work, work);
    this.tail = result.catch(() => {});
    return result;
  }

  /** Resolves when everything submitted so far has finished (successfully or not). */
  idle(): Promise<void> {
    return this.tail.then(() => {}, () => {});
  }
}
