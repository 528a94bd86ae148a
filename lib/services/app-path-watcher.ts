/**
 * Watches app paths for rules that wait for a file (PENDING: the file does not exist yet) or follow one
 * (EXACT_PATH: the file may be replaced by a rename, e.g. an upgrade). It watches the nearest existing
 * directory of the path with fs.watch (inotify on Linux), so nothing polls, and calls back, debounced,
 * when an entry on the way to the path changes. The callback decides what to do and re-arms the watch.
 */
import fs from 'node:fs';
import path from 'node:path';

const DEBOUNCE_MS = 100;

interface Subscription {
  target: string;
  directory: string;
  watcher: fs.FSWatcher | null;
  timer: NodeJS.Timeout | null;
  onChange: () => void;
}

export class AppPathWatcher {
  private readonly subscriptions = new Map<number, Subscription>();
  private closed = false;

  constructor(private readonly onError: (error: Error, target: string) => void = () => {}) {}

  /** Watches `target` for `key` (a rule id), replacing any earlier watch of that key. */
  watch(key: number, target: string, onChange: () => void): void {
    if (this.closed) return;
    const existing = this.subscriptions.get(key);
    const directory = nearestExistingDirectory(path.dirname(target));
    if (existing !== undefined && existing.target === target && existing.directory === directory && existing.watcher !== null) {
      existing.onChange = onChange;
      return;
    }
    this.unwatch(key);
    const subscription: Subscription = { target, directory, watcher: null, timer: null, onChange };
    this.subscriptions.set(key, subscription);
    const relevantEntry = path.relative(directory, target).split(path.sep)[0];
    try {
      subscription.watcher = fs.watch(directory, { persistent: false }, (_event, filename) => {
        // Only the entry on the way to the target matters; a null filename means "something changed".
        if (filename !== null && filename !== undefined && String(filename) !== relevantEntry) return;
        this.schedule(key, subscription);
      });
      subscription.watcher.on('error', () => this.schedule(key, subscription));
    } catch (error) {
      this.onError(error as Error, target);
    }
  }

  unwatch(key: number): void {
    const subscription = this.subscriptions.get(key);
    if (subscription === undefined) return;
    this.subscriptions.delete(key);
    if (subscription.timer !== null) clearTimeout(subscription.timer);
    subscription.watcher?.close();
  }

  watchedKeys(): number[] {
    return [...this.subscriptions.keys()];
  }

  close(): void {
    this.closed = true;
    for (const key of [...this.subscriptions.keys()]) this.unwatch(key);
  }

  private schedule(key: number, subscription: Subscription): void {
    if (this.subscriptions.get(key) !== subscription) return;
    if (subscription.timer !== null) clearTimeout(subscription.timer);
    // Debounced: an installer writes and renames in bursts; one re-apply after the burst is enough.
    subscription.timer = setTimeout(() => {
      subscription.timer = null;
      if (this.subscriptions.get(key) === subscription) subscription.onChange();
    }, DEBOUNCE_MS);
  }
}

function nearestExistingDirectory(start: string): string {
  let directory = start;
  for (;;) {
    try {
      if (fs.statSync(directory).isDirectory()) return directory;
    } catch {
      // missing: go up
    }
    const parent = path.dirname(directory);
    if (parent === directory) return directory;
    directory = parent;
  }
}
