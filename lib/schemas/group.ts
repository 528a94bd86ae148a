/**
 * Rule groups: the bundle a client installs or a subscription serves, the installed group, the
 * subscription, and the checks a bundle must pass before anything is changed. A bundle is validated the
 * same way whether it came in a request body or from a subscription URL (`checkBundle`).
 */
import Type, { type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import {
  RuleDraftSchema, validateRuleDraft, withDraftDefaults, type RuleDraft, type RuleDraftInput,
} from './rule.js';
import { QuotaDraftSchema, validateQuotaDraft, withQuotaDefaults, type QuotaDraft } from './quota.js';
import type { FieldError } from './problem.js';
import { fieldErrorsFromSchemaIssues, type SchemaValidationIssue } from '../http/problem.js';

/** Lower-case slug: safe in a URL path segment and in log lines. */
export const GROUP_ID_PATTERN = '^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$';
/** Bundles are hand-written lists; a cap keeps one from flooding the engine. */
export const MAX_RULES_PER_BUNDLE = 1000;
export const MAX_QUOTAS_PER_BUNDLE = 1000;
export const MIN_INTERVAL_SEC = 60;
export const MAX_INTERVAL_SEC = 7 * 24 * 3600;

export const BundleSchema = Type.Object({
  id: Type.String({ pattern: GROUP_ID_PATTERN, description: 'slug: a-z, 0-9, ".", "_", "-"; at most 64 characters' }),
  name: Type.String({ minLength: 1, maxLength: 200 }),
  version: Type.String({ minLength: 1, maxLength: 64 }),
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  rules: Type.Array(RuleDraftSchema, { maxItems: MAX_RULES_PER_BUNDLE }),
  quotas: Type.Array(QuotaDraftSchema, { maxItems: MAX_QUOTAS_PER_BUNDLE }),
}, { additionalProperties: false });
export type BundleInput = Static<typeof BundleSchema>;

/** A bundle that passed every check, with rule defaults filled in. */
export interface Bundle {
  id: string;
  name: string;
  version: string;
  description: string | null;
  rules: RuleDraft[];
  quotas: QuotaDraft[];
}

export const GroupSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  version: Type.String(),
  description: Type.Union([Type.Null(), Type.String()]),
  rule_ids: Type.Array(Type.String()),
  quota_ids: Type.Array(Type.String()),
  installed_at: Type.String(),
  source: Type.String({ description: '"manual", or the URL of the subscription that installed the group' }),
});
export type Group = Static<typeof GroupSchema>;

export const SubscriptionSchema = Type.Object({
  url: Type.String(),
  interval_sec: Type.Integer(),
  group_id: Type.Union([Type.Null(), Type.String()]),
  etag: Type.Union([Type.Null(), Type.String()]),
  last_fetch_at: Type.Union([Type.Null(), Type.String()]),
  last_error: Type.Union([Type.Null(), Type.String()]),
});
export type Subscription = Static<typeof SubscriptionSchema>;

export const GroupListSchema = Type.Object({
  groups: Type.Array(GroupSchema),
  subscriptions: Type.Array(SubscriptionSchema),
});
export type GroupList = Static<typeof GroupListSchema>;

export const SubscribeBodySchema = Type.Object({
  url: Type.String({ minLength: 1, maxLength: 2048, description: 'https, or http to a loopback host only' }),
  interval_sec: Type.Integer({ minimum: MIN_INTERVAL_SEC, maximum: MAX_INTERVAL_SEC }),
}, { additionalProperties: false });
export type SubscribeBody = Static<typeof SubscribeBodySchema>;

export const SubscriptionResultSchema = Type.Object({
  subscription: SubscriptionSchema,
  group: GroupSchema,
  /** Whether this poll changed the installed group (false after a 304 or an identical bundle). */
  changed: Type.Boolean(),
});
export type SubscriptionResult = Static<typeof SubscriptionResultSchema>;

export const GroupIdParamsSchema = Type.Object({ id: Type.String() });

const bundleCheck = Compile(BundleSchema);

/** JSON-pointer-ish "rules.2.remote_port" -> "rules[2].remote_port", the way a reader indexes a list. */
function indexNotation(field: string): string {
  return field.replace(/\.(\d+)(?=\.|$)/g, '[$1]');
}

/**
 * Every reason `input` is not an installable bundle (schema, then the cross-field checks of each rule and
 * quota), or the bundle with defaults filled in.
 */
export function checkBundle(input: unknown): { bundle: Bundle; errors?: undefined } | { bundle?: undefined; errors: FieldError[] } {
  if (!bundleCheck.Check(input)) {
    const issues = bundleCheck.Errors(input) as unknown as SchemaValidationIssue[];
    const errors = fieldErrorsFromSchemaIssues(issues, 'body').map((e) => ({ field: indexNotation(e.field), message: e.message }));
    return { errors };
  }
  const valid = input as BundleInput;
  const errors: FieldError[] = [];
  const rules = valid.rules.map((raw, index) => {
    const draft = withDraftDefaults(raw as RuleDraftInput);
    for (const error of validateRuleDraft(draft)) errors.push({ field: `rules[${index}].${error.field}`, message: error.message });
    return draft;
  });
  const quotas = valid.quotas.map((raw, index) => {
    const draft = withQuotaDefaults(raw);
    for (const error of validateQuotaDraft(draft)) errors.push({ field: `quotas[${index}].${error.field}`, message: error.message });
    return draft;
  });
  if (errors.length > 0) return { errors };
  return {
    bundle: { id: valid.id, name: valid.name, version: valid.version, description: valid.description ?? null, rules, quotas },
  };
}
