/**
 * The license server's settings come from its environment only (NETCLAMP_LS_*), never from a file in the
 * repository: the private key and the secrets are the vendor's. Every problem is reported at once.
 */
import { Compile } from 'typebox/compile';
import { fieldErrorsFromSchemaIssues, type SchemaValidationIssue } from '../http/problem.js';
import { privateKeyFromText } from '../license/token.js';
import { parseListen, type ListenAddress } from '../services/config.js';
import { DEFAULT_LISTEN, type LicenseServerOptions } from './app.js';
import { DEFAULT_PROVIDER_TIMEOUT_MS, DEFAULT_PROVIDER_URL, type ProviderSettings } from './provider.js';
import { PackListSchema, type Pack } from './schemas.js';

export const DEFAULT_DB = 'netclamp-license-server.db';

/** An example pack list; a vendor sets NETCLAMP_LS_PACKS to the variants of their own store. */
export const DEFAULT_PACKS: readonly Pack[] = [
  { variant_id: '1', name: '5 clamp slots', units: 5, price: '9.00', currency: 'EUR' },
  { variant_id: '2', name: '25 clamp slots', units: 25, price: '29.00', currency: 'EUR' },
];

const packsCheck = Compile(PackListSchema);

export class LicenseServerConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`license server configuration: ${problems.join('; ')}`);
    this.name = 'LicenseServerConfigError';
  }
}

export type ServeSettings = Omit<LicenseServerOptions, 'logger' | 'now' | 'provider'> & { provider: ProviderSettings; listen: ListenAddress };

export function settingsFromEnv(env: NodeJS.ProcessEnv): ServeSettings {
  const problems: string[] = [];
  const required = (name: string): string => {
    const value = env[name];
    if (value === undefined || value.trim() === '') {
      problems.push(`${name} is not set`);
      return '';
    }
    return value;
  };

  const keyText = required('NETCLAMP_LS_PRIVATE_KEY');
  let privateKey: LicenseServerOptions['privateKey'] | undefined;
  if (keyText !== '') {
    try {
      privateKey = privateKeyFromText(keyText);
    } catch (error) {
      problems.push(`NETCLAMP_LS_PRIVATE_KEY: ${(error as Error).message}`);
    }
  }
  const webhookSecret = required('NETCLAMP_LS_WEBHOOK_SECRET');
  const apiKey = required('NETCLAMP_LS_PROVIDER_API_KEY');
  const storeId = required('NETCLAMP_LS_STORE_ID');

  const providerUrl = env.NETCLAMP_LS_PROVIDER_URL?.trim() || DEFAULT_PROVIDER_URL;
  try {
    const parsed = new URL(providerUrl);
    if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') throw new Error('must be an http(s) URL');
  } catch (error) {
    problems.push(`NETCLAMP_LS_PROVIDER_URL: ${(error as Error).message}`);
  }

  let timeoutMs = DEFAULT_PROVIDER_TIMEOUT_MS;
  const timeoutText = env.NETCLAMP_LS_PROVIDER_TIMEOUT_MS?.trim();
  if (timeoutText !== undefined && timeoutText !== '') {
    timeoutMs = Number(timeoutText);
    if (!Number.isInteger(timeoutMs) || timeoutMs < 100 || timeoutMs > 120_000) problems.push('NETCLAMP_LS_PROVIDER_TIMEOUT_MS: must be an integer 100-120000');
  }

  let packs: readonly Pack[] = DEFAULT_PACKS;
  const packsText = env.NETCLAMP_LS_PACKS?.trim();
  if (packsText !== undefined && packsText !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(packsText);
    } catch {
      problems.push('NETCLAMP_LS_PACKS: is not JSON');
    }
    if (parsed !== undefined) {
      if (!packsCheck.Check(parsed)) {
        const errors = fieldErrorsFromSchemaIssues(packsCheck.Errors(parsed) as unknown as SchemaValidationIssue[]);
        problems.push(`NETCLAMP_LS_PACKS: ${errors.map((e) => `${e.field}: ${e.message}`).join(', ')}`);
      } else {
        const ids = parsed.map((pack) => pack.variant_id);
        if (new Set(ids).size !== ids.length) problems.push('NETCLAMP_LS_PACKS: variant_id values must be unique');
        packs = parsed;
      }
    }
  }

  let listen: ListenAddress = parseListen(DEFAULT_LISTEN);
  const listenText = env.NETCLAMP_LS_LISTEN?.trim();
  if (listenText !== undefined && listenText !== '') {
    try {
      listen = parseListen(listenText);
    } catch (error) {
      problems.push(`NETCLAMP_LS_LISTEN: ${(error as Error).message}`);
    }
  }

  if (problems.length > 0 || privateKey === undefined) throw new LicenseServerConfigError(problems);
  return {
    privateKey,
    webhookSecret,
    provider: { url: providerUrl, apiKey, storeId, timeoutMs },
    packs,
    dbPath: env.NETCLAMP_LS_DB?.trim() || DEFAULT_DB,
    listen,
  };
}
