/**
 * Which IP addresses a webhook may be sent to: public unicast only. A merchant chooses the URL,
 * so without this check a webhook could be aimed at our own loopback services, the cloud
 * metadata endpoint (169.254.169.254) or the private network behind us (SSRF). Pure code: the
 * caller resolves names and asks about every address.
 */
import { isIP } from 'node:net';

export type RefusalReason =
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'link_local'
  | 'carrier_grade_nat'
  | 'ipv4_mapped'
  | 'multicast'
  | 'broadcast'
  | 'documentation'
  | 'reserved'
  | 'not_an_ip_address';

/** "a loopback address", "an IPv4-mapped address": for messages to the merchant. */
export const REASON_TEXT: Readonly<Record<RefusalReason, string>> = {
  unspecified: 'an unspecified address',
  loopback: 'a loopback address',
  private: 'a private address',
  link_local: 'a link-local address',
  carrier_grade_nat: 'a carrier-grade NAT address',
  ipv4_mapped: 'an IPv4-mapped IPv6 address',
  multicast: 'a multicast address',
  broadcast: 'the broadcast address',
  documentation: 'a documentation-only address',
  reserved: 'a reserved address',
  not_an_ip_address: 'not an IP address',
};

export type AddressVerdict = { allowed: true } | { allowed: false; reason: RefusalReason };

interface Range {
  bits: 32 | 128;
  base: bigint;
  prefix: number;
  reason: RefusalReason;
}

// First match wins, so a narrow range sits before the wide one containing it.
const IPV4_REFUSED: [string, RefusalReason][] = [
  ['0.0.0.0/8', 'unspecified'], // "this network"; connecting to 0.0.0.0 reaches the local host
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'carrier_grade_nat'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link_local'], // includes the cloud metadata service
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'], // IETF protocol assignments
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', 'reserved'], // 6to4 relay anycast, deprecated
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'reserved'], // benchmarking
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['240.0.0.0/4', 'reserved'],
];

const IPV6_REFUSED: [string, RefusalReason][] = [
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  // Mapped addresses are refused whatever the IPv4 address inside: DNS has no reason to return
  // them, and a socket given one connects over IPv4 to the embedded address.
  ['::ffff:0:0/96', 'ipv4_mapped'],
  ['::/96', 'reserved'], // IPv4-compatible, deprecated
  ['64:ff9b:1::/48', 'private'], // local-use NAT64
  ['100::/64', 'reserved'], // discard-only
  ['2001:db8::/32', 'documentation'],
  ['2001::/23', 'reserved'], // IETF protocol assignments: Teredo, ORCHID, benchmarking
  ['2002::/16', 'reserved'], // 6to4, which tunnels to an embedded IPv4 address
  ['3fff::/20', 'documentation'],
  ['5f00::/16', 'reserved'], // segment routing
  ['fc00::/7', 'private'], // unique local
  ['fe80::/10', 'link_local'],
  ['fec0::/10', 'private'], // site-local, deprecated
  ['ff00::/8', 'multicast'],
];

// The well-known NAT64 prefix carries an IPv4 address in its last 32 bits; in an IPv6-only
// network DNS64 answers with it for every IPv4-only host, so it is judged by that address.
const NAT64 = parseRange('64:ff9b::/96', 'reserved');
// Everything outside 2000::/3 is not global unicast.
const GLOBAL_UNICAST = parseRange('2000::/3', 'reserved');

const V4_RANGES = IPV4_REFUSED.map(([cidr, reason]) => parseRange(cidr, reason));
const V6_RANGES = IPV6_REFUSED.map(([cidr, reason]) => parseRange(cidr, reason));

export function classifyAddress(address: string): AddressVerdict {
  // A zone (fe80::1%eth0) names an interface, not a different address.
  const bare = address.split('%')[0] as string;
  const family = isIP(bare);
  if (family === 4) return classifyV4(parseV4(bare));
  if (family === 6) return classifyV6(parseV6(bare));
  return { allowed: false, reason: 'not_an_ip_address' };
}

function classifyV4(value: bigint): AddressVerdict {
  const range = V4_RANGES.find((r) => contains(r, value));
  return range ? { allowed: false, reason: range.reason } : { allowed: true };
}

function classifyV6(value: bigint): AddressVerdict {
  if (contains(NAT64, value)) return classifyV4(value & 0xffffffffn);
  const range = V6_RANGES.find((r) => contains(r, value));
  if (range) return { allowed: false, reason: range.reason };
  return contains(GLOBAL_UNICAST, value) ? { allowed: true } : { allowed: false, reason: 'reserved' };
}

function contains(range: Range, value: bigint): boolean {
  const shift = BigInt(range.bits - range.prefix);
  return value >> shift === range.base >> shift;
}

function parseRange(cidr: string, reason: RefusalReason): Range {
  const [address, prefix] = cidr.split('/') as [string, string];
  const v4 = isIP(address) === 4;
  return { bits: v4 ? 32 : 128, base: v4 ? parseV4(address) : parseV6(address), prefix: Number(prefix), reason };
}

/** Dotted quad to a number; the caller has checked it with isIP. */
function parseV4(text: string): bigint {
  return text.split('.').reduce((value, part) => (value << 8n) | BigInt(Number(part)), 0n);
}

/** IPv6 text (with :: and an optional dotted-quad tail) to a 128-bit number; checked by isIP. */
function parseV6(text: string): bigint {
  let source = text;
  if (source.includes('.')) {
    const tail = source.lastIndexOf(':') + 1;
    const v4 = parseV4(source.slice(tail));
    source = `${source.slice(0, tail)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, rest] = source.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = rest ? rest.split(':') : [];
  const groups = rest === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return groups.reduce((value, group) => (value << 16n) | BigInt(Number.parseInt(group, 16)), 0n);
}
