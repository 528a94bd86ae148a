/**
 * DNS-rebinding defence: a browser tricked into calling us under an attacker's name sends that name in
 * Host. Only loopback names and addresses are accepted: localhost (and *.localhost), 127.0.0.0/8, ::1,
 * each with or without a port. Everything else, including a missing Host, is refused with 403.
 */
import { isIPv4, isIPv6 } from 'node:net';

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
    return isIPv6(host) && isIPv6Loopback(host);
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
  if (isIPv4(host)) return host.startsWith('127.');
  return false;
}

function isIPv6Loopback(address: string): boolean {
  // Expand "::" so that every spelling of ::1 (0:0:0:0:0:0:0:1, ::0:1, ...) compares equal.
  const [head = '', tail = ''] = address.includes('::') ? address.split('::') : [address, ''];
  const headParts = head === '' ? [] : head.split(':');
  const tailParts = tail === '' ? [] : tail.split(':');
  if (headParts.concat(tailParts).some((part) => part.includes('.'))) return false;
  const missing = 8 - headParts.length - tailParts.length;
  const groups = [...headParts, ...Array<string>(Math.max(missing, 0)).fill('0'), ...tailParts].map((g) => parseInt(g, 16));
  return groups.length === 8 && groups.slice(0, 7).every((g) => g === 0) && groups[7] === 1;
}
