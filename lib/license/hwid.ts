/**
 * This machine's HWID (contract, Licensing): SHA-256 hex of a product salt and stable machine identifiers.
 * Linux: /etc/machine-id (or the D-Bus copy) and the DMI product UUID (readable by root only on most
 * systems; the service runs as root). Windows: MachineGuid and the SMBIOS type-1 UUID, which only the addon
 * can read (`hwidInputs()` of the native engine, when it offers it).
 *
 * An identifier that cannot be read hashes as an empty string, so the HWID stays stable as long as the same
 * inputs are (un)available; `inputs` says which ones went in. A test seed (test settings only) is mixed in
 * so that two services on one machine have different HWIDs.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';

/** Changing it changes every HWID: every bound credit would stop counting. Never change it. */
const HWID_SALT = 'NetClamp HWID v1';

export interface HwidInput {
  name: string;
  /** '' when it could not be read. */
  value: string;
}

export interface MachineHwid {
  hwid: string;
  /** Names of the identifiers that were read (non-empty). */
  inputs: string[];
}

export const LINUX_HWID_SOURCES: ReadonlyArray<{ name: string; paths: readonly string[] }> = [
  { name: 'machine-id', paths: ['/etc/machine-id', '/var/lib/dbus/machine-id'] },
  { name: 'dmi-product-uuid', paths: ['/sys/class/dmi/id/product_uuid'] },
];

/** The addon's HwidInputs (binding/src/common/backend.h). */
export interface NativeHwidInputs {
  machineGuid: string;
  smbiosUuid: string;
}

function firstReadable(paths: readonly string[]): string {
  for (const file of paths) {
    try {
      const value = fs.readFileSync(file, 'utf8').trim().toLowerCase();
      if (value !== '') return value;
    } catch {
      // unreadable or absent: try the next place
    }
  }
  return '';
}

export function readLinuxHwidInputs(sources = LINUX_HWID_SOURCES): HwidInput[] {
  return sources.map((source) => ({ name: source.name, value: firstReadable(source.paths) }));
}

export function windowsHwidInputs(native: NativeHwidInputs | null): HwidInput[] {
  return [
    { name: 'machine-guid', value: (native?.machineGuid ?? '').trim().toLowerCase() },
    { name: 'smbios-uuid', value: (native?.smbiosUuid ?? '').trim().toLowerCase() },
  ];
}

export function hwidOf(inputs: readonly HwidInput[], testSeed?: string): MachineHwid {
  const hash = createHash('sha256').update(HWID_SALT);
  for (const input of inputs) hash.update(`\n${input.name}=${input.value}`);
  if (testSeed !== undefined) hash.update(`\ntest-seed=${testSeed}`);
  return { hwid: hash.digest('hex'), inputs: inputs.filter((input) => input.value !== '').map((input) => input.name) };
}

/**
 * The HWID of this machine. `readNative` is the engine's `hwidInputs()` when it has one (Windows); a
 * failure there degrades to empty inputs rather than keeping the service from starting.
 */
export async function machineHwid(options: {
  platform?: NodeJS.Platform; readNative?: (() => Promise<NativeHwidInputs>) | undefined; testSeed?: string | undefined;
} = {}): Promise<MachineHwid> {
  const platform = options.platform ?? process.platform;
  if (platform === 'win32') {
    const native = options.readNative === undefined ? null : await options.readNative().catch(() => null);
    return hwidOf(windowsHwidInputs(native), options.testSeed);
  }
  return hwidOf(readLinuxHwidInputs(), options.testSeed);
}

/**
 * The engine's reader of the addon's HwidInputs, when it offers one (duck-typed: it is not part of the
 * Engine contract, and only the Windows addon fills it in).
 */
export function engineHwidReader(engine: object): (() => Promise<NativeHwidInputs>) | undefined {
  const candidate = engine as { hwidInputs?: () => Promise<NativeHwidInputs> };
  return typeof candidate.hwidInputs === 'function' ? () => candidate.hwidInputs!() : undefined;
}
