/**
 * /license and /billing bodies and answers, and the license server's answers the service accepts
 * (docs/licensing.md): the single source of validation, types and OpenAPI.
 */
import Type, { type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { MAX_TOKEN_LENGTH, UUID_PATTERN } from '../license/token.js';

/** Nonces the service makes: 32 base64url characters; the protocol allows 22..64. */
export const NONCE_PATTERN = '^[A-Za-z0-9_-]{22,64}$';

export const TokenBodySchema = Type.Object({
  token: Type.String({ minLength: 1, maxLength: MAX_TOKEN_LENGTH, description: 'payload.signature (base64url)' }),
}, { additionalProperties: false });

export const CreditIdParamsSchema = Type.Object({
  credit_id: Type.String({ pattern: UUID_PATTERN, description: 'a credit id (UUID) from GET /license' }),
});

export const NonceParamsSchema = Type.Object({
  nonce: Type.String({ pattern: NONCE_PATTERN }),
});

export const CheckoutBodySchema = Type.Object({
  variant_id: Type.String({ minLength: 1, maxLength: 200 }),
}, { additionalProperties: false });

const CREDIT_STATES = ['active', 'expired', 'other_hwid', 'bad_signature'] as const;

export const CreditSchema = Type.Object({
  credit_id: Type.String(),
  units: Type.Integer(),
  variant_id: Type.String(),
  binding: Type.Integer(),
  activated_at: Type.String({ description: 'ISO 8601 UTC' }),
  expires_at: Type.Union([Type.String(), Type.Null()]),
  /** Only `active` credits count towards `cap`. */
  state: Type.Enum(CREDIT_STATES),
});
export type Credit = Static<typeof CreditSchema>;
export type CreditState = typeof CREDIT_STATES[number];

export const TransferredCreditSchema = Type.Object({
  credit_id: Type.String(),
  units: Type.Integer(),
  binding: Type.Integer(),
  transferred_at: Type.String(),
  /** The unbound token the transfer gave out, kept so that a lost answer is not a lost credit. */
  token: Type.String(),
});
export type TransferredCredit = Static<typeof TransferredCreditSchema>;

export const LicenseStateSchema = Type.Object({
  cap: Type.Integer(),
  used: Type.Integer({ description: 'enabled LIMIT rules + enabled quotas (clamp slots)' }),
  baseline: Type.Integer(),
  hwid: Type.String(),
  credits: Type.Array(CreditSchema),
  transferred: Type.Array(TransferredCreditSchema),
  /** True when a test vendor key or HWID seed is in effect: never on a real install. */
  test_settings: Type.Boolean(),
});
export type LicenseState = Static<typeof LicenseStateSchema>;

export const HwidSchema = Type.Object({
  hwid: Type.String(),
  /** Which machine identifiers went into the hash. */
  inputs: Type.Array(Type.String()),
});

export const ActivationSchema = Type.Object({
  credit: CreditSchema,
  /** false when this exact credit was already active (activation is idempotent). */
  changed: Type.Boolean(),
  cap: Type.Integer(),
  used: Type.Integer(),
});
export type Activation = Static<typeof ActivationSchema>;

export const TransferSchema = Type.Object({
  credit_id: Type.String(),
  units: Type.Integer(),
  token: Type.String({ description: 'unbound token: POST /license/rebind on the other machine' }),
  cap: Type.Integer(),
  used: Type.Integer(),
});
export type Transfer = Static<typeof TransferSchema>;

export const CheckoutSchema = Type.Object({
  checkout_url: Type.String(),
  nonce: Type.String(),
});

export const CheckPendingSchema = Type.Object({ status: Type.Literal('pending') });
export const CheckMintedSchema = Type.Object({
  status: Type.Literal('minted'),
  token: Type.String(),
  credit: CreditSchema,
  cap: Type.Integer(),
  used: Type.Integer(),
});
export type CheckMinted = Static<typeof CheckMintedSchema>;

export const PackSchema = Type.Object({
  variant_id: Type.String(),
  name: Type.String(),
  units: Type.Integer(),
  price: Type.String(),
  currency: Type.String(),
});
export type Pack = Static<typeof PackSchema>;
export const PackListSchema = Type.Object({ packs: Type.Array(PackSchema) });

// ---- what the license server answers (checked before use: a bad answer is a 502) ------------------

export const upstreamPacks = Compile(Type.Object({ packs: Type.Array(PackSchema, { maxItems: 1000 }) }));
export const upstreamCheckout = Compile(Type.Object({ checkout_url: Type.String({ minLength: 1, maxLength: 4096 }) }));
export const upstreamCheckStatus = Compile(Type.Union([
  Type.Object({ status: Type.Literal('pending') }),
  Type.Object({ status: Type.Literal('minted'), token: Type.String({ maxLength: MAX_TOKEN_LENGTH }) }),
]));
export const upstreamToken = Compile(Type.Object({ token: Type.String({ maxLength: MAX_TOKEN_LENGTH }) }));
