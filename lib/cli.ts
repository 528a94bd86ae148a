#!/usr/bin/env node
/**
 * netclamp serve [--data-dir DIR] [--listen HOST:PORT]
 *
 * Prints one line once listening (tests wait for it):
 *   netclamp listening on http://127.0.0.1:9845 (data dir /var/lib/netclamp)
 * SIGINT/SIGTERM: closes the server, the engine and the database, then exits 0.
 */
import { parseArgs } from 'node:util';
import { serve } from './server.js';
import { resolveDataDir } from './services/data-dir.js';
import { parseListen } from './services/config.js';
import { VERSION } from './version.js';

const USAGE = `Usage: netclamp serve [--data-dir DIR] [--listen HOST:PORT]

Runs the NetClamp service: the REST API on http://HOST:PORT/api/v1/.

Options:
  --data-dir DIR      where auth.token, netclamp.db, config.toml and service.log live
                      (default: /var/lib/netclamp as root, else $XDG_STATE_HOME/netclamp or
                      ~/.local/state/netclamp; NETCLAMP_DATA_DIR overrides the default)
  --listen HOST:PORT  address to listen on (default from config.toml [server] listen,
                      else 127.0.0.1:9845; port 0 picks a free port)
  -h, --help          show this help
  -v, --version       show the version
`;

function fail(message: string): never {
  process.stderr.write(`netclamp: ${message}\n\n${USAGE}`);
  process.exit(2);
}

async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'data-dir': { type: 'string' },
        listen: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (error) {
    fail((error as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help === true) {
    process.stdout.write(USAGE);
    return;
  }
  if (values.version === true) {
    process.stdout.write(`${VERSION}\n`);
    return;
  }
  if (positionals.length !== 1 || positionals[0] !== 'serve') {
    fail(positionals.length === 0 ? 'missing command' : `unknown command: ${positionals.join(' ')}`);
  }
  if (values.listen !== undefined) {
    try {
      parseListen(values.listen);
    } catch (error) {
      fail(`--listen ${values.listen}: ${(error as Error).message}`);
    }
  }

  const dataDir = resolveDataDir({ flag: values['data-dir'] });
  const server = await serve({ dataDir, listen: values.listen });
  process.stdout.write(`netclamp listening on ${server.url} (data dir ${dataDir})\n`);

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    server.app.log.info({ signal }, 'shutting down');
    server.close().then(
      () => {
        // After close() the log file is closed too: the last word goes where "listening on" went.
        process.stdout.write('netclamp stopped: rules saved, nothing left attached to the kernel\n');
        process.exit(0);
      },
      (error: unknown) => {
        process.stderr.write(`netclamp: shutdown failed: ${(error as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`netclamp: ${(error as Error).message}\n`);
  process.exit(1);
});
