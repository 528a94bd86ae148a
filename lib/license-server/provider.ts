/**
 * The payment provider's checkout API, in Lemon Squeezy's shape: POST {base}/v1/checkouts with a JSON:API
 * document naming the store and the variant, and our nonce as custom checkout data (it comes back in the
 * order webhook's meta.custom_data). The hwid is not sent: the provider has no need for it.
 */
export const DEFAULT_PROVIDER_URL = 'https://api.lemonsqueezy.com';
export const DEFAULT_PROVIDER_TIMEOUT_MS = 10_000;
/** A checkout answer is a few KiB; anything far bigger is not one. */
const MAX_ANSWER_BYTES = 1024 * 1024;
const JSON_API = 'application/vnd.api+json';

export interface ProviderSettings {
  /** Base URL, e.g. https://api.lemonsqueezy.com. */
  url: string;
  apiKey: string;
  storeId: string;
  timeoutMs?: number;
}

/** Why the provider did not give a checkout URL: `timeout` becomes a 504, the rest a 502. */
export class ProviderError extends Error {
  readonly kind: 'timeout' | 'unreachable' | 'status' | 'answer';
  constructor(kind: ProviderError['kind'], message: string) {
    super(message);
    this.name = 'ProviderError';
    this.kind = kind;
  }
}

export interface PaymentProvider {
  createCheckout(request: { variantId: string; nonce: string }): Promise<{ url: string }>;
}

export class LemonSqueezyCheckouts implements PaymentProvider {
  private readonly endpoint: string;
  private readonly timeoutMs: number;

  constructor(private readonly settings: ProviderSettings) {
    this.endpoint = `${settings.url.replace(/\/+$/, '')}/v1/checkouts`;
    this.timeoutMs = settings.timeoutMs ?? DEFAULT_PROVIDER_TIMEOUT_MS;
  }

  async createCheckout(request: { variantId: string; nonce: string }): Promise<{ url: string }> {
    const document = {
      data: {
        type: 'checkouts',
        attributes: { checkout_data: { custom: { nonce: request.nonce } } },
        relationships: {
          store: { data: { type: 'stores', id: this.settings.storeId } },
          variant: { data: { type: 'variants', id: request.variantId } },
        },
      },
    };
    // One signal for the whole exchange: a provider that sends headers and then stalls the body times out too.
    const signal = AbortSignal.timeout(this.timeoutMs);
    let text: string;
    let status: number;
    try {
      const response = await fetch(this.endpoint, {
        method: 'POST',
        headers: { Authorization: `Bearer ${this.settings.apiKey}`, 'Content-Type': JSON_API, Accept: JSON_API },
        body: JSON.stringify(document),
        signal,
        redirect: 'error',
      });
      status = response.status;
      text = await response.text();
    } catch (error) {
      if (signal.aborted) throw new ProviderError('timeout', `payment provider did not answer within ${this.timeoutMs} ms`);
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new ProviderError('unreachable', `payment provider unreachable: ${cause?.code ?? cause?.message ?? (error as Error).message}`);
    }
    if (text.length > MAX_ANSWER_BYTES) throw new ProviderError('answer', 'payment provider answer is too large');
    if (status !== 200 && status !== 201) {
      throw new ProviderError('status', `payment provider refused the checkout: HTTP ${status}${providerErrorDetail(text)}`);
    }
    let url: unknown;
    try {
      url = (JSON.parse(text) as { data?: { attributes?: { url?: unknown } } }).data?.attributes?.url;
    } catch {
      throw new ProviderError('answer', 'payment provider answer is not JSON');
    }
    if (typeof url !== 'string' || !/^https?:\/\//.test(url)) {
      throw new ProviderError('answer', 'payment provider answer has no data.attributes.url');
    }
    return { url };
  }
}

/** The first JSON:API error's detail, if the answer has one (never the request, which holds the key). */
function providerErrorDetail(text: string): string {
  try {
    const detail = (JSON.parse(text) as { errors?: Array<{ detail?: unknown }> }).errors?.[0]?.detail;
    return typeof detail === 'string' ? ` (${detail.slice(0, 200)})` : '';
  } catch {
    return '';
  }
}
