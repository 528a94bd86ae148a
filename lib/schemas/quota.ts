/**
 * Quota draft and stored quota: the single source of truth for validation, TypeScript types and OpenAPI.
 * Cross-field checks (LIMIT needs a rate, absolute paths) live in `validateQuotaDraft`.
 */
import Type, { type Static } from 'typebox';
import { absolutePathKind, isAbsoluteAppPath } from './app-path.js';
import type { FieldError } from './problem.js';

const MATCH_MODES = ['EXACT_PATH', 'FILENAME', 'DIRECTORY'] as const;
const DIRECTIONS = ['INBOUND', 'OUTBOUND', 'BOTH'] as const;
const PERIODS = ['DAILY', 'WEEKLY', 'MONTHLY', 'NEVER'] as const;
const ON_EXCEED = ['BLOCK', 'LIMIT', 'NOTIFY'] as const;

export const QuotaPeriodSchema = Type.Enum(PERIODS);
export const QuotaOnExceedSchema = Type.Enum(ON_EXCEED);
const QuotaDirectionSchema = Type.Enum(DIRECTIONS);
const QuotaMatchModeSchema = Type.Enum(MATCH_MODES);

const RateSchema = Type.Union([Type.Null(), Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })]);

/**
 * Draft fields. Required: name, app_path, limit_bytes. Defaults: a monthly count of both directions that
 * only notifies (the least surprising action for a quota created without saying what it should do).
 */
const draftProperties = {
  name: Type.String({ minLength: 1, maxLength: 200 }),
  app_path: Type.String({ minLength: 1, maxLength: 4096 }),
  match_mode: Type.Optional(Type.Enum(MATCH_MODES, { default: 'EXACT_PATH' })),
  direction: Type.Optional(Type.Enum(DIRECTIONS, { default: 'BOTH' })),
  limit_bytes: Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER }),
  period: Type.Optional(Type.Enum(PERIODS, { default: 'MONTHLY' })),
  on_exceed: Type.Optional(Type.Enum(ON_EXCEED, { default: 'NOTIFY' })),
  limit_rate_bytes_per_sec: Type.Optional(Type.Union(RateSchema.anyOf, { default: null })),
  enabled: Type.Optional(Type.Boolean({ default: true })),
};

/** POST body. */
export const QuotaDraftSchema = Type.Object(draftProperties, { additionalProperties: false });
/** PUT body: a draft, optionally with the revision the client read (optimistic concurrency). */
export const QuotaUpdateSchema = Type.Object(
  { ...draftProperties, revision: Type.Optional(Type.Integer({ minimum: 1 })) },
  { additionalProperties: false },
);
export type QuotaDraftInput = Static<typeof QuotaDraftSchema>;
export type QuotaUpdateInput = Static<typeof QuotaUpdateSchema>;

export type QuotaPeriodName = Static<typeof QuotaPeriodSchema>;
export type QuotaOnExceed = Static<typeof QuotaOnExceedSchema>;

/** A draft with every default filled in. */
export interface QuotaDraft {
  name: string;
  app_path: string;
  match_mode: Static<typeof QuotaMatchModeSchema>;
  direction: Static<typeof QuotaDirectionSchema>;
  limit_bytes: number;
  period: QuotaPeriodName;
  on_exceed: QuotaOnExceed;
  limit_rate_bytes_per_sec: number | null;
  enabled: boolean;
}

const NullableString = Type.Union([Type.Null(), Type.String()]);

export const QuotaSchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  app_path: Type.String(),
  match_mode: QuotaMatchModeSchema,
  direction: QuotaDirectionSchema,
  limit_bytes: Type.Integer(),
  period: QuotaPeriodSchema,
  on_exceed: QuotaOnExceedSchema,
  limit_rate_bytes_per_sec: RateSchema,
  enabled: Type.Boolean(),
  revision: Type.Integer(),
  group_id: NullableString,
  used_bytes: Type.Integer(),
  /** ISO 8601 UTC; null for NEVER. */
  period_start: NullableString,
  period_end: NullableString,
  exceeded: Type.Boolean(),
  exceeded_at: NullableString,
  created_at: Type.String(),
  updated_at: Type.String(),
});
export type Quota = Static<typeof QuotaSchema>;

export const QuotaListSchema = Type.Array(QuotaSchema);
export const QuotaIdParamsSchema = Type.Object({ id: Type.String() });

export function withQuotaDefaults(input: QuotaDraftInput | QuotaUpdateInput): QuotaDraft {
  return {
    name: input.name,
    app_path: input.app_path,
    match_mode: input.match_mode ?? 'EXACT_PATH',
    direction: input.direction ?? 'BOTH',
    limit_bytes: input.limit_bytes,
    period: input.period ?? 'MONTHLY',
    on_exceed: input.on_exceed ?? 'NOTIFY',
    limit_rate_bytes_per_sec: input.limit_rate_bytes_per_sec ?? null,
    enabled: input.enabled ?? true,
  };
}

/** The checks the schema cannot express; every problem, empty when valid. */
export function validateQuotaDraft(draft: QuotaDraft): FieldError[] {
  const errors: FieldError[] = [];
  if (draft.name.trim() === '') errors.push({ field: 'name', message: 'must not be blank' });
  if (!isAbsoluteAppPath(draft.app_path)) {
    errors.push({ field: 'app_path', message: `must be ${absolutePathKind()} (a quota counts one application)` });
  }
  if (draft.on_exceed === 'LIMIT') {
    if (draft.limit_rate_bytes_per_sec === null) {
      errors.push({ field: 'limit_rate_bytes_per_sec', message: 'is required when on_exceed is LIMIT' });
    }
  } else if (draft.limit_rate_bytes_per_sec !== null) {
    errors.push({ field: 'limit_rate_bytes_per_sec', message: `must be null when on_exceed is ${draft.on_exceed}` });
  }
  return errors;
}
