/**
 * How the service's licensing is set up. Real installs use none of this: the vendor key is built in
 * (vendor-key.ts) and the HWID is the machine's. Tests inject a key and an HWID seed explicitly, through
 * buildApp's `license` option or, for a service process, NETCLAMP_TEST_VENDOR_KEY / NETCLAMP_TEST_HWID_SEED;
 * the service then warns loudly in its log and GET /license reports `test_settings: true`.
 */
export interface LicenseSettings {
  /** TEST ONLY: a raw base64url Ed25519 public key that replaces the vendor's. */
  testVendorKey?: string;
  /** TEST ONLY: mixed into the HWID, so two services on one machine have different HWIDs. */
  testHwidSeed?: string;
  /** Deadline of each license-server call. */
  upstreamTimeoutMs?: number;
  packsCacheMs?: number;
  /** Epoch milliseconds: token expiry, the packs cache and the billing rate limits (tests). */
  now?: () => number;
}

export const TEST_VENDOR_KEY_ENV = 'NETCLAMP_TEST_VENDOR_KEY';
export const TEST_HWID_SEED_ENV = 'NETCLAMP_TEST_HWID_SEED';

/** The test settings a service process was started with, if any. */
export function licenseSettingsFromEnv(env: NodeJS.ProcessEnv): LicenseSettings {
  const settings: LicenseSettings = {};
  const key = env[TEST_VENDOR_KEY_ENV];
  const seed = env[TEST_HWID_SEED_ENV];
  if (key !== undefined && key !== '') settings.testVendorKey = key;
  if (seed !== undefined && seed !== '') settings.testHwidSeed = seed;
  return settings;
}

export function usesTestSettings(settings: LicenseSettings | undefined): boolean {
  return settings?.testVendorKey !== undefined || settings?.testHwidSeed !== undefined;
}
