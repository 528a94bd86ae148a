/** Request and response shapes of the license server's HTTP API (docs/licensing.md), and its pack list. */
import Type, { type Static } from 'typebox';
import { HWID_PATTERN, UUID_PATTERN } from '../license/token.js';

export const NONCE_PATTERN = '^[A-Za-z0-9_-]{22,64}$';

export const PackSchema = Type.Object({
  /** The payment provider's variant id of the product sold. */
  variant_id: Type.String({ minLength: 1, maxLength: 128 }),
  name: Type.String({ minLength: 1, maxLength: 200 }),
  /** Clamp slots one credit of this pack adds. */
  units: Type.Integer({ minimum: 1, maximum: 1000 }),
  /** Display price, decimal with two places. */
  price: Type.String({ pattern: '^[0-9]{1,9}\\.[0-9]{2}$' }),
  currency: Type.String({ pattern: '^[A-Z]{3}$' }),
}, { additionalProperties: false });
export type Pack = Static<typeof PackSchema>;

export const PackListSchema = Type.Array(PackSchema, { minItems: 1, maxItems: 100 });

export const PacksResponseSchema = Type.Object({ packs: Type.Array(PackSchema) });

const Hwid = Type.String({ pattern: HWID_PATTERN, description: '64 lowercase hex digits' });
const Nonce = Type.String({ pattern: NONCE_PATTERN, description: '22 to 64 characters A-Z a-z 0-9 _ -' });
/** Parsed and checked by the handler, so a bad token gets a reason rather than a pattern mismatch. */
const TokenText = Type.String({ minLength: 1, maxLength: 8192 });

export const CheckoutRequestSchema = Type.Object({
  variant_id: Type.String({ minLength: 1, maxLength: 128 }),
  hwid: Hwid,
  nonce: Nonce,
}, { additionalProperties: false });

export const CheckoutCreatedSchema = Type.Object({ nonce: Type.String(), checkout_url: Type.String() });

export const CheckoutParamsSchema = Type.Object({ nonce: Nonce });
export const CheckoutQuerySchema = Type.Object({ hwid: Hwid }, { additionalProperties: false });

export const CheckoutPendingSchema = Type.Object({ status: Type.Literal('pending') });
export const CheckoutMintedSchema = Type.Object({ status: Type.Literal('minted'), token: Type.String() });

export const CreditParamsSchema = Type.Object({ credit_id: Type.String({ pattern: UUID_PATTERN }) });

export const UnbindRequestSchema = Type.Object({ token: TokenText, hwid: Hwid }, { additionalProperties: false });
export const BindRequestSchema = Type.Object({ token: TokenText, hwid: Hwid }, { additionalProperties: false });
export const TokenResponseSchema = Type.Object({ token: Type.String() });

/**
 * The part of the provider's webhook (Lemon Squeezy's shape) the server reads; the rest of the document is
 * ignored. `variant_id` is a number in Lemon Squeezy's payloads; a string is accepted too.
 */
export const WebhookSchema = Type.Object({
  meta: Type.Object({
    event_name: Type.String(),
    custom_data: Type.Optional(Type.Union([Type.Null(), Type.Object({ nonce: Type.Optional(Type.Unknown()) })])),
  }),
  data: Type.Optional(Type.Object({
    type: Type.Optional(Type.String()),
    id: Type.Optional(Type.Union([Type.String(), Type.Integer()])),
    attributes: Type.Optional(Type.Object({
      status: Type.Optional(Type.String()),
      first_order_item: Type.Optional(Type.Union([Type.Null(), Type.Object({
        variant_id: Type.Optional(Type.Union([Type.String(), Type.Integer()])),
      })])),
    })),
  })),
});
export type Webhook = Static<typeof WebhookSchema>;
