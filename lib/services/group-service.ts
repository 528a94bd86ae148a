/**
 * Rule groups: install / replace / uninstall bundles, and subscriptions that keep one group up to date
 * from a URL.
 *
 * Every change of a group goes through RuleService's group methods, so the group's row, its rules, its
 * quotas and its subscription row change in one SQLite transaction on the single write queue, and an ENGINE_DOWN undoes
 * all of it. Ownership checks run inside that transaction too, so two concurrent installs cannot both
 * pass them.
 *
 * Ownership: a group installed by POST /groups/install has source "manual"; one installed by a
 * subscription has the subscription's URL as source and is changed only by that subscription (a manual
 * install over it is 409; DELETE it first). A subscription may take over a manually installed group.
 */
import type { FastifyBaseLogger } from 'fastify';
import { ProblemError } from '../http/problem.js';
import {
  checkBundle, type Bundle, type Group, type GroupList, type Subscription, type SubscriptionResult,
} from '../schemas/group.js';
import type { RuleDraft } from '../schemas/rule.js';
import type { QuotaDraft } from '../schemas/quota.js';
import type { QuotaPeriodState, QuotasStore, StoredQuota } from '../store/quotas-store.js';
import { periodStrings } from './quota-period.js';
import { MANUAL_SOURCE, type GroupsStore, type StoredGroup, type StoredSubscription } from '../store/groups-store.js';
import type { RulesStore, StoredRule } from '../store/rules-store.js';
import type { EventBus } from './event-bus.js';
import type { RuleService } from './rule-service.js';
import { quotaSlots, ruleSlots, sumSlots, type SlotGate } from './clamp-slots.js';
import {
  DEFAULT_FETCH_TIMEOUT_MS, DEFAULT_MAX_BUNDLE_BYTES, DEFAULT_MAX_REDIRECTS, fetchBundle, subscriptionUrlProblem,
  SubscriptionFetchError, type FetchLimits,
} from './subscription-fetcher.js';

/** setTimeout cannot wait longer than this; a longer delay is waited out in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface GroupServiceOptions {
  rules: RuleService;
  rulesStore: RulesStore;
  /** The group's quota rows change in the same transaction as its rules; the quota service counts them. */
  quotasStore: QuotasStore;
  store: GroupsStore;
  events: EventBus;
  log: FastifyBaseLogger;
  /** Clamp-slot cap (licensing): a bundle that does not fit is refused whole. None = no cap. */
  slots?: SlotGate;
  fetchLimits?: Partial<FetchLimits>;
  now?: () => Date;
}

export interface InstallOutcome {
  group: Group;
  /** An installed group with the same id was replaced (200) rather than created (201). */
  replaced: boolean;
}

/** The draft fields of a stored rule, to tell whether a fetched bundle changes anything. */
function draftOf(rule: StoredRule): RuleDraft {
  return {
    name: rule.name, app_path: rule.app_path, action: rule.action, direction: rule.direction,
    remote_address: rule.remote_address, remote_port: rule.remote_port, protocol: rule.protocol,
    rate_limit_down_bytes_per_sec: rule.rate_limit_down_bytes_per_sec,
    rate_limit_up_bytes_per_sec: rule.rate_limit_up_bytes_per_sec, limit_scope: rule.limit_scope,
    match_mode: rule.match_mode, priority: rule.priority, enabled: rule.enabled,
  };
}

function quotaDraftOf(quota: StoredQuota): QuotaDraft {
  return {
    name: quota.name, app_path: quota.app_path, match_mode: quota.match_mode, direction: quota.direction,
    limit_bytes: quota.limit_bytes, period: quota.period, on_exceed: quota.on_exceed,
    limit_rate_bytes_per_sec: quota.limit_rate_bytes_per_sec, enabled: quota.enabled,
  };
}

/**
 * The counting state a group quota starts with. A new version of a bundle must not forgive what was used:
 * a quota with the same name, app and period as one of the replaced group keeps its count and period
 * (still exceeded only if the new limit is still reached; the quota service flags a new exceed itself).
 */
function carriedPeriod(draft: QuotaDraft, previous: readonly StoredQuota[], now: Date): QuotaPeriodState {
  const match = previous.find((quota) => quota.name === draft.name && quota.app_path === draft.app_path && quota.period === draft.period);
  if (match === undefined) return { used_bytes: 0, ...periodStrings(draft.period, now), exceeded: false, exceeded_at: null };
  const exceeded = match.exceeded && match.used_bytes >= draft.limit_bytes;
  return {
    used_bytes: match.used_bytes, period_start: match.period_start, period_end: match.period_end,
    exceeded, exceeded_at: exceeded ? match.exceeded_at : null,
  };
}

function canonicalUrl(raw: string): string {
  return new URL(raw).toString();
}

export class GroupService {
  private readonly rules: RuleService;
  private readonly rulesStore: RulesStore;
  private readonly quotasStore: QuotasStore;
  private readonly store: GroupsStore;
  private readonly events: EventBus;
  private readonly log: FastifyBaseLogger;
  private readonly slots: SlotGate | undefined;
  private readonly limits: FetchLimits;
  private readonly now: () => Date;
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** One poll per URL at a time; a refresh during a scheduled poll joins it. */
  private readonly inFlight = new Map<string, Promise<SubscriptionResult>>();
  private readonly closing = new AbortController();

  constructor(options: GroupServiceOptions) {
    this.rules = options.rules;
    this.rulesStore = options.rulesStore;
    this.quotasStore = options.quotasStore;
    this.store = options.store;
    this.events = options.events;
    this.log = options.log;
    this.slots = options.slots;
    this.limits = {
      timeoutMs: options.fetchLimits?.timeoutMs ?? DEFAULT_FETCH_TIMEOUT_MS,
      maxBytes: options.fetchLimits?.maxBytes ?? DEFAULT_MAX_BUNDLE_BYTES,
      maxRedirects: options.fetchLimits?.maxRedirects ?? DEFAULT_MAX_REDIRECTS,
    };
    this.now = options.now ?? (() => new Date());
  }

  // ---- reads -------------------------------------------------------------------------------------

  list(): GroupList {
    return {
      groups: this.store.listGroups().map((group) => this.present(group)),
      subscriptions: this.store.listSubscriptions().map(presentSubscription),
    };
  }

  get(id: string): Group {
    const group = this.store.getGroup(id);
    if (group === undefined) throw notFound(id);
    return this.present(group);
  }

  // ---- manual groups -----------------------------------------------------------------------------

  async install(bundle: Bundle): Promise<InstallOutcome> {
    const { previous } = await this.write(bundle, MANUAL_SOURCE, null);
    const group = this.get(bundle.id);
    this.events.emit('group_updated', { group_id: group.id, name: group.name, version: group.version });
    return { group, replaced: previous !== undefined };
  }

  /**
   * Removes the group, its rules (from the engine too), its quotas and the subscription that installed it.
   * The quota service lifts the engine actions of removed quotas with its next sample.
   */
  async uninstall(id: string): Promise<void> {
    const group = this.store.getGroup(id);
    if (group === undefined) throw notFound(id);
    let subscription: StoredSubscription | undefined;
    let quotas: StoredQuota[] = [];
    await this.rules.removeGroupRules(id, {
      persist: () => {
        if (!this.store.deleteGroup(id)) throw notFound(id); // uninstalled meanwhile
        subscription = this.store.subscriptionOfGroup(id);
        if (subscription !== undefined) this.store.deleteSubscription(subscription.url);
        quotas = this.quotasStore.listByGroup(id);
        for (const quota of quotas) this.quotasStore.delete(quota.id);
      },
      undo: () => {
        this.store.putGroup(group);
        if (subscription !== undefined) this.store.putSubscription(subscription);
        for (const quota of quotas) this.quotasStore.restore(quota);
      },
    });
    if (subscription !== undefined) this.unschedule(subscription.url);
  }

  // ---- subscriptions -----------------------------------------------------------------------------

  /**
   * Creates a subscription and fetches it at once. The subscription is kept only if that first fetch
   * installs a group: a URL that does not work now is the caller's to fix, not a background retry loop.
   */
  async subscribe(rawUrl: string, intervalSec: number): Promise<SubscriptionResult> {
    const problem = subscriptionUrlProblem(rawUrl);
    if (problem !== null) throw new ProblemError(400, `url: ${problem}`, { errors: [{ field: 'url', message: problem }] });
    const url = canonicalUrl(rawUrl);
    if (this.store.getSubscription(url) !== undefined || this.inFlight.has(url)) {
      throw new ProblemError(409, `${url} is already subscribed; POST /groups/{id}/refresh polls it now`);
    }
    const fresh: StoredSubscription = {
      url, interval_sec: intervalSec, group_id: null, etag: null, last_fetch_at: null, last_error: null,
      created_at: this.now().toISOString(),
    };
    const first = this.pollOnce(fresh, true);
    this.inFlight.set(url, first);
    try {
      const result = await first;
      this.schedule(url, intervalSec * 1000);
      return result;
    } finally {
      this.inFlight.delete(url);
    }
  }

  /** POST /groups/{id}/refresh: polls the group's subscription now. */
  async refresh(id: string): Promise<SubscriptionResult> {
    const group = this.store.getGroup(id);
    if (group === undefined) throw notFound(id);
    const subscription = this.store.subscriptionOfGroup(id);
    if (subscription === undefined) {
      throw new ProblemError(409, `group ${id} was installed manually and has no subscription to poll`);
    }
    return this.poll(subscription.url);
  }

  /** Start-up: every persisted subscription polls again when its interval since the last fetch is over. */
  start(): void {
    const nowMs = this.now().getTime();
    for (const subscription of this.store.listSubscriptions()) {
      const last = subscription.last_fetch_at === null ? 0 : Date.parse(subscription.last_fetch_at);
      const due = last + subscription.interval_sec * 1000;
      this.schedule(subscription.url, Math.max(0, due - nowMs));
    }
  }

  async close(): Promise<void> {
    this.closing.abort();
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    await Promise.allSettled([...this.inFlight.values()]);
  }

  // ---- internals ---------------------------------------------------------------------------------

  private schedule(url: string, delayMs: number): void {
    this.unschedule(url);
    if (this.closing.signal.aborted) return;
    const wait = Math.min(delayMs, MAX_TIMER_MS);
    const timer = setTimeout(() => {
      this.timers.delete(url);
      if (wait < delayMs) {
        this.schedule(url, delayMs - wait);
        return;
      }
      // A failed scheduled poll is already recorded and announced (group_error); nothing to return to.
      this.poll(url).catch(() => {});
    }, wait);
    timer.unref();
    this.timers.set(url, timer);
  }

  private unschedule(url: string): void {
    const timer = this.timers.get(url);
    if (timer !== undefined) clearTimeout(timer);
    this.timers.delete(url);
  }

  /** A poll of a persisted subscription; the next one is scheduled an interval after it, whatever the outcome. */
  private poll(url: string): Promise<SubscriptionResult> {
    const running = this.inFlight.get(url);
    if (running !== undefined) return running;
    const subscription = this.store.getSubscription(url);
    if (subscription === undefined) return Promise.reject(new ProblemError(404, `no subscription ${url}`));
    const work = this.pollOnce(subscription, false).finally(() => {
      this.inFlight.delete(url);
      const current = this.store.getSubscription(url);
      if (current !== undefined) this.schedule(url, current.interval_sec * 1000);
    });
    this.inFlight.set(url, work);
    return work;
  }

  private async pollOnce(subscription: StoredSubscription, first: boolean): Promise<SubscriptionResult> {
    const { url } = subscription;
    const fail = (status: number, detail: string, headers?: Record<string, string>): ProblemError => {
      // Nothing to record for a subscription that is gone (uninstalled during the poll) or being shut down.
      if (!first && !this.closing.signal.aborted && this.store.getSubscription(url) !== undefined) {
        this.store.recordPoll(url, this.now().toISOString(), detail);
        this.events.emit('group_error', { group_id: subscription.group_id ?? '', detail });
        this.log.warn({ url, detail }, 'subscription poll failed; the last good bundle stays installed');
      }
      return new ProblemError(status, detail, { headers });
    };

    let fetched;
    try {
      fetched = await fetchBundle(url, first ? null : subscription.etag, this.limits, this.closing.signal);
    } catch (error) {
      if (error instanceof SubscriptionFetchError) throw fail(error.status, error.message);
      throw fail(502, `fetching ${url} failed: ${(error as Error).message}`);
    }
    const fetchedAt = this.now().toISOString();
    if (fetched.notModified) {
      this.store.recordPoll(url, fetchedAt, null);
      return this.result(url, false);
    }
    const checked = checkBundle(fetched.body);
    if (checked.errors !== undefined) {
      throw fail(502, `the bundle at ${url} is invalid: ${checked.errors.map((e) => `${e.field}: ${e.message}`).join('; ')}`);
    }
    const bundle = checked.bundle;
    if (subscription.group_id !== null && bundle.id !== subscription.group_id) {
      throw fail(502, `the bundle at ${url} changed its id from ${subscription.group_id} to ${bundle.id}; subscribe to it anew`);
    }
    const next: StoredSubscription = { ...subscription, group_id: bundle.id, etag: fetched.etag, last_fetch_at: fetchedAt, last_error: null };
    if (!first && this.sameAsInstalled(bundle)) {
      // An UPDATE, not a put: a subscription deleted while this poll ran stays deleted.
      this.store.recordFetch(next);
      return this.result(url, false);
    }
    try {
      await this.write(bundle, url, next, first);
    } catch (error) {
      if (error instanceof ProblemError) throw fail(error.status, error.detail, error.headers);
      throw error;
    }
    this.events.emit('group_updated', { group_id: bundle.id, name: bundle.name, version: bundle.version });
    return this.result(url, true);
  }

  /**
   * Installs `bundle` as group `bundle.id` from `source`, replacing its rules; `subscription` (for a
   * subscription's poll) is written in the same transaction, and must still exist unless `firstFetch`.
   */
  private async write(
    bundle: Bundle, source: string, subscription: StoredSubscription | null, firstFetch = false,
  ): Promise<{ previous: StoredGroup | undefined }> {
    let previous: StoredGroup | undefined;
    let previousSubscription: StoredSubscription | undefined;
    let previousQuotas: StoredQuota[] = [];
    let insertedQuotas: StoredQuota[] = [];
    await this.rules.replaceGroupRules(bundle.id, bundle.rules, {
      persist: (_ruleIds, replacedRules) => {
        previous = this.store.getGroup(bundle.id);
        if (previous !== undefined && previous.source !== MANUAL_SOURCE && previous.source !== source) {
          throw new ProblemError(409, source === MANUAL_SOURCE
            ? `group ${bundle.id} is kept up to date by the subscription ${previous.source}; DELETE /groups/${bundle.id} first`
            : `group ${bundle.id} belongs to the subscription ${previous.source}`);
        }
        this.store.putGroup({
          id: bundle.id, name: bundle.name, version: bundle.version, description: bundle.description, source,
          installed_at: this.now().toISOString(),
        });
        if (subscription !== null) {
          previousSubscription = this.store.getSubscription(subscription.url);
          // A poll that finishes after its group was uninstalled must not bring either back.
          if (previousSubscription === undefined && !firstFetch) {
            throw new ProblemError(404, `the subscription ${subscription.url} was removed while it was polled`);
          }
          this.store.putSubscription(subscription);
        }
        const now = this.now();
        previousQuotas = this.quotasStore.listByGroup(bundle.id);
        for (const quota of previousQuotas) this.quotasStore.delete(quota.id);
        insertedQuotas = bundle.quotas.map((draft) =>
          this.quotasStore.insert(draft, carriedPeriod(draft, previousQuotas, now), now.toISOString(), bundle.id));
        // Inside the transaction, after the whole bundle is written: a refusal rolls all of it back.
        this.slots?.requireSlots(
          sumSlots(bundle.rules, ruleSlots) + sumSlots(bundle.quotas, quotaSlots)
            - sumSlots(replacedRules, ruleSlots) - sumSlots(previousQuotas, quotaSlots),
          `bundle ${bundle.id}`, { written: true },
        );
      },
      undo: () => {
        for (const quota of insertedQuotas) this.quotasStore.delete(quota.id);
        for (const quota of previousQuotas) this.quotasStore.restore(quota);
        if (previous !== undefined) this.store.putGroup(previous);
        else this.store.deleteGroup(bundle.id);
        if (subscription !== null) {
          if (previousSubscription !== undefined) this.store.putSubscription(previousSubscription);
          else this.store.deleteSubscription(subscription.url);
        }
      },
    });
    return { previous };
  }

  /** True when the installed group already is exactly this bundle (a server without ETags re-sends it). */
  private sameAsInstalled(bundle: Bundle): boolean {
    const installed = this.store.getGroup(bundle.id);
    if (installed === undefined) return false;
    if (installed.name !== bundle.name || installed.version !== bundle.version || installed.description !== bundle.description) return false;
    const rules = this.rulesStore.listByGroup(bundle.id).map(draftOf);
    if (JSON.stringify(rules) !== JSON.stringify(bundle.rules.map((rule) => draftOf(rule as StoredRule)))) return false;
    const quotas = this.quotasStore.listByGroup(bundle.id).map(quotaDraftOf);
    return JSON.stringify(quotas) === JSON.stringify(bundle.quotas.map((quota) => quotaDraftOf(quota as StoredQuota)));
  }

  private result(url: string, changed: boolean): SubscriptionResult {
    const subscription = this.store.getSubscription(url);
    if (subscription === undefined || subscription.group_id === null) throw new ProblemError(404, `no subscription ${url}`);
    return { subscription: presentSubscription(subscription), group: this.get(subscription.group_id), changed };
  }

  private present(group: StoredGroup): Group {
    return {
      id: group.id,
      name: group.name,
      version: group.version,
      description: group.description,
      rule_ids: this.rulesStore.listByGroup(group.id).map((rule) => String(rule.id)),
      quota_ids: this.quotasStore.listByGroup(group.id).map((quota) => String(quota.id)),
      installed_at: group.installed_at,
      source: group.source,
    };
  }
}

function presentSubscription(subscription: StoredSubscription): Subscription {
  return {
    url: subscription.url,
    interval_sec: subscription.interval_sec,
    group_id: subscription.group_id,
    etag: subscription.etag,
    last_fetch_at: subscription.last_fetch_at,
    last_error: subscription.last_error,
  };
}

function notFound(id: string): ProblemError {
  return new ProblemError(404, `group ${id} is not installed`);
}
