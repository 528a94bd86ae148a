/**
 * DNS-rebinding defence: a browser tricked into calling us under an attacker's name sends that name in
 * Host. Only loopback names and addresses are accepted: localhost (and *.localhost), 127.0.0.0/8, ::1,
 * and 127.0.0.0/8 mapped into IPv6 (::ffff:127.0.0.1), each with or without a port. Everything else,
 * including a missing Host, is refused with 403.
 */
import { BlockList, isIPv4, isIPv6 } from 'node:net';

// node's BlockList compares every spelling of an address, and matches IPv4-mapped IPv6 against IPv4 subnets.
const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

export function isLoopbackHost(hostHeader: string | undefined): boolean {
  if (hostHeader === undefined) return false;
  const value = hostHeader.trim().toLowerCase();
  let host: string;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end === -1) return false;
    host = value.slice(1, end);
    const rest = value.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return false;
    return isIPv6(host) && LOOPBACK.check(host, 'ipv6');
  }
  const colon = value.lastIndexOf(':');
  if (colon !== -1) {
    if (!/^\d{1,5}$/.test(value.slice(colon + 1))) return false;
    host = value.slice(0, colon);
  } else {
    host = value;
  }
  if (host.endsWith('.')) host = host.slice(0, -1); // "localhost." is the same name
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIPv4(host)) return LOOPBACK.check(host, 'ipv4');
  return false;
}
