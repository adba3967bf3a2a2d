import { isIPv4, isIPv6 } from 'node:net';

// Which IP addresses a file download may connect to. Pure functions, no I/O: the URL policy uses
// them for IP-literal hosts and the download agent uses them for every address DNS returns.

export type RefusedAddressKind =
  | 'not-an-address'
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'carrier-grade-nat'
  | 'link-local'
  | 'unique-local'
  | 'multicast'
  | 'broadcast'
  | 'reserved';

export type AddressVerdict =
  | { refused: false }
  | { refused: true; kind: RefusedAddressKind; description: string };

const descriptions: Record<RefusedAddressKind, string> = {
  'not-an-address': 'not a valid IP address',
  unspecified: 'an unspecified address',
  loopback: 'a loopback address (this machine)',
  private: 'a private network address',
  'carrier-grade-nat': 'a carrier-grade NAT address',
  'link-local': 'a link-local address (such as a cloud metadata service)',
  'unique-local': 'a unique-local (private) IPv6 address',
  multicast: 'a multicast address',
  broadcast: 'a broadcast address',
  reserved: 'a reserved or special-purpose address',
};

interface Ipv4Range {
  base: number;
  prefix: number;
  kind: RefusedAddressKind;
}

function v4(dotted: string, prefix: number, kind: RefusedAddressKind): Ipv4Range {
  return { base: parseIpv4(dotted), prefix, kind };
}

// Order matters only where ranges overlap: the broadcast address sits inside 240.0.0.0/4.
const refusedIpv4Ranges: readonly Ipv4Range[] = [
  v4('255.255.255.255', 32, 'broadcast'),
  v4('0.0.0.0', 8, 'unspecified'),
  v4('10.0.0.0', 8, 'private'),
  v4('100.64.0.0', 10, 'carrier-grade-nat'),
  v4('127.0.0.0', 8, 'loopback'),
  v4('169.254.0.0', 16, 'link-local'),
  v4('172.16.0.0', 12, 'private'),
  v4('192.0.0.0', 24, 'reserved'), // IETF protocol assignments
  v4('192.0.2.0', 24, 'reserved'), // documentation
  v4('192.88.99.0', 24, 'reserved'), // deprecated 6to4 relay anycast
  v4('192.168.0.0', 16, 'private'),
  v4('198.18.0.0', 15, 'reserved'), // benchmarking
  v4('198.51.100.0', 24, 'reserved'), // documentation
  v4('203.0.113.0', 24, 'reserved'), // documentation
  v4('224.0.0.0', 4, 'multicast'),
  v4('240.0.0.0', 4, 'reserved'),
];

function parseIpv4(dotted: string): number {
  return dotted.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
}

function inIpv4Range(address: number, range: Ipv4Range): boolean {
  const size = 2 ** (32 - range.prefix);
  return Math.floor(address / size) === Math.floor(range.base / size);
}

function classifyIpv4(dotted: string): RefusedAddressKind | undefined {
  const address = parseIpv4(dotted);
  return refusedIpv4Ranges.find((range) => inIpv4Range(address, range))?.kind;
}

/** Eight 16-bit groups; the input must already have passed `isIPv6`. */
function parseIpv6(text: string): number[] {
  const lastColon = text.lastIndexOf(':');
  const last = text.slice(lastColon + 1);
  // A trailing dotted IPv4 part (::ffff:1.2.3.4) is rewritten as two hex groups first.
  const embedded = last.includes('.') ? parseIpv4(last) : undefined;
  const hexOnly = embedded === undefined
    ? text
    : `${text.slice(0, lastColon + 1)}${(embedded >>> 16).toString(16)}:${(embedded & 0xffff).toString(16)}`;
  const toGroups = (part: string): number[] =>
    part === '' ? [] : part.split(':').map((group) => parseInt(group, 16));
  const [head = '', tail] = hexOnly.split('::');
  const headGroups = toGroups(head);
  const tailGroups = tail === undefined ? [] : toGroups(tail);
  const zeros = new Array<number>(8 - headGroups.length - tailGroups.length).fill(0);
  return [...headGroups, ...zeros, ...tailGroups];
}

function embeddedIpv4(high: number, low: number): string {
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.');
}

function classifyIpv6(text: string): RefusedAddressKind | undefined {
  const g = parseIpv6(text);
  const [g0 = 0, g1 = 0, g2 = 0, g3 = 0, g4 = 0, g5 = 0, g6 = 0, g7 = 0] = g;
  const firstFiveZero = g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0;

  if (firstFiveZero && g5 === 0 && g6 === 0 && g7 === 0) return 'unspecified';
  if (firstFiveZero && g5 === 0 && g6 === 0 && g7 === 1) return 'loopback';
  // ::ffff:a.b.c.d reaches the IPv4 address itself, so it is judged as that address.
  if (firstFiveZero && g5 === 0xffff) return classifyIpv4(embeddedIpv4(g6, g7));
  // NAT64 (64:ff9b::/96) forwards to the embedded IPv4 address; a public one is fine.
  if (g0 === 0x64 && g1 === 0xff9b && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0) {
    return classifyIpv4(embeddedIpv4(g6, g7));
  }
  // 6to4 (2002::/16) carries the relay's IPv4 address in the next 32 bits.
  if (g0 === 0x2002) return classifyIpv4(embeddedIpv4(g1, g2));
  if ((g0 & 0xfe00) === 0xfc00) return 'unique-local';
  if ((g0 & 0xffc0) === 0xfe80) return 'link-local';
  if ((g0 & 0xff00) === 0xff00) return 'multicast';
  // 2001::/23 holds Teredo (whose IPv4 is obfuscated) and other protocol assignments,
  // 2001:db8::/32 is documentation; no file host lives there.
  if (g0 === 0x2001 && (g1 & 0xfe00) === 0) return 'reserved';
  if (g0 === 0x2001 && g1 === 0x0db8) return 'reserved';
  // Everything outside global unicast (2000::/3) — IPv4-compatible, site-local, discard,
  // local-use NAT64 and unassigned space — has no business serving a clinic's PDF.
  if ((g0 & 0xe000) !== 0x2000) return 'reserved';
  return undefined;
}

/** Judges one IP address (IPv4, IPv6, IPv4-mapped IPv6; an IPv6 zone such as `%eth0` is ignored). */
export function classifyAddress(address: string): AddressVerdict {
  const bare = address.replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '');
  let kind: RefusedAddressKind | undefined;
  if (isIPv4(bare)) kind = classifyIpv4(bare);
  else if (isIPv6(bare)) kind = classifyIpv6(bare.toLowerCase());
  else kind = 'not-an-address';
  return kind === undefined ? { refused: false } : { refused: true, kind, description: descriptions[kind] };
}

export function isRefusedAddress(address: string): boolean {
  return classifyAddress(address).refused;
}
