/**
 * Stands in when the native engine cannot be loaded or opened (not root, addon missing): the service
 * still serves reads and reports why, and every write that needs the kernel gets 503.
 */
import { EngineError, type Engine, type EngineCounters, type EngineStatus, type InstalledRule } from './engine.js';

export class UnavailableEngine implements Engine {
  constructor(private readonly reason: string) {}

  async open(): Promise<void> {
    throw this.down();
  }

  async close(): Promise<void> {}

  status(): EngineStatus {
    return { platform: process.platform, filtering: false, shaping: false, state: 'UNAVAILABLE', detail: this.reason };
  }

  async applyRule(): Promise<void> {
    throw this.down();
  }

  async removeRule(): Promise<void> {
    throw this.down();
  }

  async installedRules(): Promise<InstalledRule[]> {
    throw this.down();
  }

  async readCounters(): Promise<EngineCounters> {
    throw this.down();
  }

  private down(): EngineError {
    return new EngineError('ENGINE_DOWN', `engine unavailable: ${this.reason}`);
  }
}
