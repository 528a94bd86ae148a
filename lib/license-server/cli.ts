#!/usr/bin/env node
/**
 * netclamp-license-server serve | keygen
 *
 * serve: reads NETCLAMP_LS_* (docs/licensing.md), logs JSON lines to stdout, and prints
 *   netclamp-license-server listening on http://127.0.0.1:9846
 * once listening. SIGINT/SIGTERM close it (and its database) and exit 0.
 * keygen: prints a fresh Ed25519 key pair: the private seed for NETCLAMP_LS_PRIVATE_KEY and the public key
 * to build into the service (lib/license/vendor-key.ts).
 */
import { pino } from 'pino';
import { generateVendorKeys } from '../license/token.js';
import { startLicenseServer } from './app.js';
import { LicenseServerConfigError, settingsFromEnv } from './config.js';

const USAGE = `Usage: netclamp-license-server serve | keygen

  serve   run the license server; settings come from the environment:
            NETCLAMP_LS_PRIVATE_KEY       Ed25519 private key: base64url 32-byte seed or PKCS#8 PEM (required)
            NETCLAMP_LS_WEBHOOK_SECRET    the payment provider's webhook signing secret (required)
            NETCLAMP_LS_PROVIDER_API_KEY  the payment provider's API key (required)
            NETCLAMP_LS_STORE_ID          the provider's store id (required)
            NETCLAMP_LS_PROVIDER_URL      default https://api.lemonsqueezy.com
            NETCLAMP_LS_PROVIDER_TIMEOUT_MS  default 10000
            NETCLAMP_LS_PACKS             JSON array of {variant_id, name, units, price, currency}
            NETCLAMP_LS_DB                SQLite file (default ./netclamp-license-server.db)
            NETCLAMP_LS_LISTEN            HOST:PORT (default 127.0.0.1:9846)
  keygen  print a new key pair (keep the private seed secret; the public key goes into the service)
`;

function fail(message: string, code = 2): never {
  process.stderr.write(`netclamp-license-server: ${message}\n`);
  process.exit(code);
}

async function serve(): Promise<void> {
  let settings;
  try {
    settings = settingsFromEnv(process.env);
  } catch (error) {
    if (error instanceof LicenseServerConfigError) fail(`${error.problems.join('\n  ')}\n\n${USAGE}`);
    throw error;
  }
  const { listen, ...options } = settings;
  const logger = pino({ level: process.env.NETCLAMP_LS_LOG_LEVEL ?? 'info' });
  const server = await startLicenseServer({ ...options, logger, host: listen.host, port: listen.port });
  process.stdout.write(`netclamp-license-server listening on ${server.url}\n`);
  let closing = false;
  const stop = (): void => {
    if (closing) return;
    closing = true;
    server.close().then(() => process.exit(0), (error: unknown) => fail(`close failed: ${(error as Error).message}`, 1));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

function keygen(): void {
  const { privateSeed, publicKey } = generateVendorKeys();
  process.stdout.write(`NETCLAMP_LS_PRIVATE_KEY=${privateSeed}\npublic key (lib/license/vendor-key.ts): ${publicKey}\n`);
}

const [command, ...rest] = process.argv.slice(2);
if (command === '-h' || command === '--help') {
  process.stdout.write(USAGE);
} else if (rest.length > 0) {
  fail(`unexpected arguments: ${rest.join(' ')}\n\n${USAGE}`);
} else if (command === 'serve') {
  serve().catch((error: unknown) => fail(`${(error as Error).message}`, 1));
} else if (command === 'keygen') {
  keygen();
} else {
  fail(`${command === undefined ? 'missing command' : `unknown command: ${command}`}\n\n${USAGE}`);
}
