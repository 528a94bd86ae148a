/**
 * The vendor's Ed25519 public key (raw 32 bytes, base64url): the only key whose tokens count on a real
 * install. Its private half was generated once and thrown away, so this placeholder verifies nothing a
 * license server could mint; a vendor replaces it with the public key `netclamp-license-server keygen`
 * printed for them (docs/licensing.md). Tests inject their own key only through explicit test settings
 * (buildApp's `license.testVendorKey`, or NETCLAMP_TEST_VENDOR_KEY for a service process).
 */
export const VENDOR_PUBLIC_KEY = 'rrEdqgoWw9w-zYIgfz7VDi1LQprlF8MgRrUbBaGgY3E';
