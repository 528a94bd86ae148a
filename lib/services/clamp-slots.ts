/**
 * Clamp slots (contract, Licensing): firewalling is free, clamping is licensed. An enabled LIMIT rule or an
 * enabled quota takes one slot; BLOCK and ALLOW rules never do. The rule, quota and group services ask the
 * gate before a write that may take slots; the license service is the gate.
 */
export interface SlotGate {
  /**
   * Throws a 402 problem when taking `added` more slots (the write's net change; <= 0 always passes)
   * would go past the cap. Synchronous on purpose: call it right before the write it guards, with no
   * await in between, so that two writes on different queues cannot both pass it for the last slot.
   * `written`: the write is already in the database, inside a transaction the 402 rolls back.
   */
  requireSlots(added: number, what: string, options?: { written?: boolean }): void;
}

export function ruleSlots(rule: { action: string; enabled: boolean }): number {
  return rule.enabled && rule.action === 'LIMIT' ? 1 : 0;
}

export function quotaSlots(quota: { enabled: boolean }): number {
  return quota.enabled ? 1 : 0;
}

export function sumSlots<T>(items: readonly T[], slots: (item: T) => number): number {
  return items.reduce((total, item) => total + slots(item), 0);
}
