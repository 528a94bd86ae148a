/**
 * Rule draft and stored rule: the single source of truth for validation (the route schemas) and for the
 * TypeScript types (Static<>). Cross-field rules that JSON Schema cannot say clearly (LIMIT needs a rate,
 * CIDR prefix lengths, absolute paths) live in `validateRuleDraft`.
 */
import Type, { type Static } from 'typebox';
import { isIP } from 'node:net';
import { absolutePathKind, isAbsoluteAppPath } from './app-path.js';
import type { FieldError } from './problem.js';

// Enums (not unions of literals): a wrong value then yields one error listing the allowed values.
const ACTIONS = ['ALLOW', 'BLOCK', 'LIMIT'] as const;
const DIRECTIONS = ['INBOUND', 'OUTBOUND', 'BOTH'] as const;
const PROTOCOLS = ['ANY', 'TCP', 'UDP', 'ICMP'] as const;
const LIMIT_SCOPES = ['PER_APP', 'PER_PROCESS', 'PER_CONNECTION'] as const;
const MATCH_MODES = ['EXACT_PATH', 'FILENAME', 'DIRECTORY'] as const;
const SYNC_STATES = ['PENDING', 'SYNCED', 'ERROR', 'DISABLED'] as const;

export const RuleActionSchema = Type.Enum(ACTIONS);
export const RuleDirectionSchema = Type.Enum(DIRECTIONS);
export const RuleProtocolSchema = Type.Enum(PROTOCOLS);
export const LimitScopeSchema = Type.Enum(LIMIT_SCOPES);
export const MatchModeSchema = Type.Enum(MATCH_MODES);
export const SyncStateSchema = Type.Enum(SYNC_STATES);

const RateSchema = Type.Union([Type.Null(), Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })]);

/** Draft fields with their defaults (the reference example's values). */
const draftProperties = {
  name: Type.String({ minLength: 1, maxLength: 200 }),
  app_path: Type.String({ maxLength: 4096 }),
  action: RuleActionSchema,
  direction: Type.Optional(Type.Enum(DIRECTIONS, { default: 'BOTH' })),
  remote_address: Type.Optional(Type.String({ maxLength: 64, default: '' })),
  remote_port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535, default: 0 })),
  protocol: Type.Optional(Type.Enum(PROTOCOLS, { default: 'ANY' })),
  rate_limit_down_bytes_per_sec: Type.Optional(Type.Union(RateSchema.anyOf, { default: null })),
  rate_limit_up_bytes_per_sec: Type.Optional(Type.Union(RateSchema.anyOf, { default: null })),
  limit_scope: Type.Optional(Type.Enum(LIMIT_SCOPES, { default: 'PER_APP' })),
  match_mode: Type.Optional(Type.Enum(MATCH_MODES, { default: 'EXACT_PATH' })),
  priority: Type.Optional(Type.Integer({ minimum: 0, maximum: 10000, default: 100 })),
  enabled: Type.Optional(Type.Boolean({ default: true })),
};

/** POST body. */
export const RuleDraftSchema = Type.Object(draftProperties, { additionalProperties: false });
/** PUT body: a draft, optionally carrying the revision the client read (optimistic concurrency). */
export const RuleUpdateSchema = Type.Object(
  { ...draftProperties, revision: Type.Optional(Type.Integer({ minimum: 1 })) },
  { additionalProperties: false },
);
export type RuleDraftInput = Static<typeof RuleDraftSchema>;
export type RuleUpdateInput = Static<typeof RuleUpdateSchema>;

/** A draft with every default filled in. */
export interface RuleDraft {
  name: string;
  app_path: string;
  action: Static<typeof RuleActionSchema>;
  direction: Static<typeof RuleDirectionSchema>;
  remote_address: string;
  remote_port: number;
  protocol: Static<typeof RuleProtocolSchema>;
  rate_limit_down_bytes_per_sec: number | null;
  rate_limit_up_bytes_per_sec: number | null;
  limit_scope: Static<typeof LimitScopeSchema>;
  match_mode: Static<typeof MatchModeSchema>;
  priority: number;
  enabled: boolean;
}

export const RuleSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  app_path: Type.String(),
  action: RuleActionSchema,
  direction: RuleDirectionSchema,
  remote_address: Type.String(),
  remote_port: Type.Integer(),
  protocol: RuleProtocolSchema,
  rate_limit_down_bytes_per_sec: RateSchema,
  rate_limit_up_bytes_per_sec: RateSchema,
  limit_scope: LimitScopeSchema,
  match_mode: MatchModeSchema,
  priority: Type.Integer(),
  enabled: Type.Boolean(),
  revision: Type.Integer(),
  sync_state: SyncStateSchema,
  sync_error: Type.Union([Type.Null(), Type.String()]),
  group_id: Type.Union([Type.Null(), Type.String()]),
  created_at: Type.String(),
  updated_at: Type.String(),
  bytes_up: Type.Integer(),
  bytes_down: Type.Integer(),
  blocked_count: Type.Integer(),
});
export type Rule = Static<typeof RuleSchema>;
export type SyncState = Static<typeof SyncStateSchema>;

export const RuleListSchema = Type.Array(RuleSchema);

export const RuleIdParamsSchema = Type.Object({ id: Type.String() });

export const ReconcileResultSchema = Type.Object({
  checked: Type.Integer(),
  repaired: Type.Integer(),
  removed: Type.Integer(),
  errors: Type.Integer(),
});
export type ReconcileResult = Static<typeof ReconcileResultSchema>;

/** Fills the defaults of a schema-valid draft; `revision` (PUT only) is not part of the draft. */
export function withDraftDefaults(input: RuleDraftInput | RuleUpdateInput): RuleDraft {
  return {
    name: input.name,
    app_path: input.app_path,
    action: input.action,
    direction: input.direction ?? 'BOTH',
    remote_address: input.remote_address ?? '',
    remote_port: input.remote_port ?? 0,
    protocol: input.protocol ?? 'ANY',
    rate_limit_down_bytes_per_sec: input.rate_limit_down_bytes_per_sec ?? null,
    rate_limit_up_bytes_per_sec: input.rate_limit_up_bytes_per_sec ?? null,
    limit_scope: input.limit_scope ?? 'PER_APP',
    match_mode: input.match_mode ?? 'EXACT_PATH',
    priority: input.priority ?? 100,
    enabled: input.enabled ?? true,
  };
}

/**
 * Why `value` is not a remote address both engines accept, or null when it is: '' (any), an IPv4 or IPv6
 * address, or ADDR/LEN. Stricter than node's isIP on purpose, to refuse up front what the data planes
 * would refuse later (a stored rule in ERROR): zone ids (`fe80::1%eth0`: neither inet_pton nor the WFP
 * planner takes them, and a rule matches every interface anyway), IPv6 with an embedded dotted IPv4 (the
 * Windows planner reads hex groups only; bundles travel between platforms), and prefix lengths with
 * leading zeros (`/08`, refused by the Windows planner).
 */
export function remoteAddressProblem(value: string): string | null {
  if (value === '') return null;
  const slash = value.indexOf('/');
  const address = slash === -1 ? value : value.slice(0, slash);
  if (address.includes('%')) {
    return 'must not carry a zone id (%...): give the address alone, a rule matches it on every interface';
  }
  const family = isIP(address);
  if (family === 0) return 'must be empty, an IPv4/IPv6 address, or a CIDR prefix with a valid prefix length';
  if (family === 6 && address.includes('.')) {
    return 'must write IPv6 in hex groups (an IPv4-mapped address as plain IPv4, e.g. 192.0.2.1)';
  }
  if (slash === -1) return null;
  const prefix = value.slice(slash + 1);
  if (!/^(0|[1-9]\d{0,2})$/.test(prefix) || Number(prefix) > (family === 4 ? 32 : 128)) {
    return `must be a CIDR prefix with a valid prefix length (0-${family === 4 ? 32 : 128}, no leading zeros)`;
  }
  return null;
}

/** The cross-field checks the schema cannot express; returns every problem, empty when valid. */
export function validateRuleDraft(draft: RuleDraft): FieldError[] {
  const errors: FieldError[] = [];
  const rates = ['rate_limit_down_bytes_per_sec', 'rate_limit_up_bytes_per_sec'] as const;
  if (draft.action === 'LIMIT') {
    if (draft.rate_limit_down_bytes_per_sec === null && draft.rate_limit_up_bytes_per_sec === null) {
      for (const field of rates) {
        errors.push({ field, message: 'LIMIT needs at least one non-null rate (down or up)' });
      }
    }
  } else {
    for (const field of rates) {
      if (draft[field] !== null) errors.push({ field, message: `must be null when action is ${draft.action}` });
    }
  }
  const remoteProblem = remoteAddressProblem(draft.remote_address);
  if (remoteProblem !== null) errors.push({ field: 'remote_address', message: remoteProblem });
  if (draft.app_path !== '' && !isAbsoluteAppPath(draft.app_path)) {
    errors.push({ field: 'app_path', message: `must be empty (every application) or ${absolutePathKind()}` });
  }
  if (draft.protocol === 'ICMP' && draft.remote_port !== 0) {
    errors.push({ field: 'remote_port', message: 'must be 0 when protocol is ICMP (ICMP has no ports)' });
  }
  if (draft.name.trim() === '') errors.push({ field: 'name', message: 'must not be blank' });
  return errors;
}
