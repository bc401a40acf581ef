import net from 'node:net';

/**
 * Which addresses a webhook may reach (the SSRF guard). A receiver URL is checked twice: at
 * submission when its host is a literal address, and at connect time against every address DNS
 * returned, so a name that resolves (or rebinds) to an internal address is refused where it counts.
 * An explicit allow-list (WEBHOOK_ALLOW_HOSTS: host names, addresses, CIDRs) admits what the
 * rules would refuse, e.g. loopback receivers in tests.
 */

/**
 * What the guard refuses: every block of IANA's IPv4 and IPv6 Special-Purpose Address Registries
 * that is not globally reachable (https://www.iana.org/assignments/iana-ipv4-special-registry/,
 * https://www.iana.org/assignments/iana-ipv6-special-registry/), plus multicast and, for IPv6,
 * everything outside global unicast 2000::/3 (IANA's IPv6 Address Space registry: reserved by the
 * IETF). The most specific matching block decides, so a globally reachable assignment inside a
 * refused block (192.0.0.9/32 inside 192.0.0.0/24) is admitted. Blocks that embed an IPv4 address
 * are judged by that address. test/fixtures/iana-special-purpose.json holds the registries as
 * transcribed; the unit test checks every entry against this table.
 */
type Verdict =
  | { kind: 'refuse'; reason: string }
  | { kind: 'allow' }
  /** The IPv4 address(es) inside decide; `label` names the form in reasons. */
  | { kind: 'embedded'; label: string; extract: (bytes: number[]) => number[][] };

interface Block {
  bytes: number[];
  prefix: number;
  verdict: Verdict;
}

const refuse = (reason: string): Verdict => ({ kind: 'refuse', reason });
const allow: Verdict = { kind: 'allow' };
const lastFour = (b: number[]) => [b.slice(12, 16)];

const IPV4_BLOCKS: [string, Verdict][] = [
  ['0.0.0.0/8', refuse('this-network')],
  ['0.0.0.0/32', refuse('unspecified')],
  ['10.0.0.0/8', refuse('private')],
  ['100.64.0.0/10', refuse('carrier-grade NAT')],
  ['127.0.0.0/8', refuse('loopback')],
  ['169.254.0.0/16', refuse('link-local')],
  ['172.16.0.0/12', refuse('private')],
  ['192.0.0.0/24', refuse('IETF protocol assignments')],
  ['192.0.0.0/29', refuse('IPv4 service continuity')],
  ['192.0.0.8/32', refuse('IPv4 dummy')],
  ['192.0.0.9/32', allow], // Port Control Protocol anycast: globally reachable
  ['192.0.0.10/32', allow], // TURN anycast: globally reachable
  ['192.0.0.170/32', refuse('NAT64/DNS64 discovery')],
  ['192.0.0.171/32', refuse('NAT64/DNS64 discovery')],
  ['192.0.2.0/24', refuse('documentation (TEST-NET-1)')],
  ['192.88.99.0/24', refuse('deprecated 6to4 relay anycast')],
  ['192.168.0.0/16', refuse('private')],
  ['198.18.0.0/15', refuse('benchmarking')],
  ['198.51.100.0/24', refuse('documentation (TEST-NET-2)')],
  ['203.0.113.0/24', refuse('documentation (TEST-NET-3)')],
  ['224.0.0.0/4', refuse('multicast')],
  ['240.0.0.0/4', refuse('reserved')],
  ['255.255.255.255/32', refuse('limited broadcast')],
];

const IPV6_BLOCKS: [string, Verdict][] = [
  ['::/128', refuse('unspecified')],
  ['::1/128', refuse('loopback')],
  // Deprecated IPv4-compatible addresses (RFC 4291 §2.5.5.1): the IPv4 address in the low 32 bits.
  ['::/96', { kind: 'embedded', label: 'IPv4-compatible', extract: lastFour }],
  ['::ffff:0:0/96', { kind: 'embedded', label: 'IPv4-mapped', extract: lastFour }],
  ['64:ff9b::/96', { kind: 'embedded', label: 'NAT64', extract: lastFour }],
  // Local-use NAT64 (RFC 8215): not globally reachable, and where the IPv4 address sits depends on
  // the operator's prefix length inside the /48, so there is no one address to judge: refused.
  ['64:ff9b:1::/48', refuse('local-use NAT64')],
  ['100::/64', refuse('discard-only')],
  ['100:0:0:1::/64', refuse('dummy prefix')],
  ['2001::/23', refuse('IETF protocol assignments')],
  // Teredo (RFC 4380): the server's IPv4 address in bits 32–63, the client's, inverted, in the last 32.
  ['2001::/32', { kind: 'embedded', label: 'Teredo', extract: (b) => [b.slice(4, 8), b.slice(12, 16).map((x) => x ^ 0xff)] }],
  ['2001:1::1/128', allow], // Port Control Protocol anycast
  ['2001:1::2/128', allow], // TURN anycast
  ['2001:1::3/128', allow], // DNS-SD Service Registration Protocol anycast
  ['2001:2::/48', refuse('benchmarking')],
  ['2001:3::/32', allow], // AMT
  ['2001:4:112::/48', allow], // AS112-v6
  ['2001:10::/28', refuse('deprecated ORCHID')],
  ['2001:20::/28', allow], // ORCHIDv2
  ['2001:30::/28', allow], // Drone Remote ID Protocol Entity Tags
  ['2001:db8::/32', refuse('documentation')],
  ['2002::/16', { kind: 'embedded', label: '6to4', extract: (b) => [b.slice(2, 6)] }],
  ['3fff::/20', refuse('documentation')],
  ['5f00::/16', refuse('SRv6 SIDs')],
  ['fc00::/7', refuse('unique-local')],
  ['fe80::/10', refuse('link-local')],
  ['fec0::/10', refuse('site-local')],
  ['ff00::/8', refuse('multicast')],
];

/** The bytes of an IPv4 or IPv6 address (4 or 16), or null when `address` is neither. */
export function addressBytes(address: string): number[] | null {
  const family = net.isIP(address);
  if (family === 4) return address.split('.').map(Number);
  if (family === 6) return ipv6Bytes(address);
  return null;
}

function parseBlocks(list: [string, Verdict][]): Block[] {
  return list
    .map(([cidr, verdict]) => {
      const [address = '', bits = ''] = cidr.split('/');
      return { bytes: addressBytes(address) as number[], prefix: Number(bits), verdict };
    })
    .sort((a, b) => b.prefix - a.prefix); // most specific first
}

const BLOCKS = { 4: parseBlocks(IPV4_BLOCKS), 6: parseBlocks(IPV6_BLOCKS) };

function inBlock(bytes: readonly number[], block: Block): boolean {
  for (let bit = 0; bit < block.prefix; bit += 8) {
    const bits = Math.min(8, block.prefix - bit);
    const mask = (0xff << (8 - bits)) & 0xff;
    if (((bytes[bit / 8] as number) & mask) !== ((block.bytes[bit / 8] as number) & mask)) return false;
  }
  return true;
}

/** The 16 bytes of an IPv6 address (dotted IPv4 tail and zone allowed), or null when it is not one. */
function ipv6Bytes(address: string): number[] | null {
  if (net.isIPv6(address) === false) return null;
  let text = address.split('%')[0] as string;
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  let tailBytes: number[] = [];
  if (tail) {
    tailBytes = (tail[1] as string).split('.').map(Number);
    text = `${text.slice(0, -(tail[1] as string).length)}0:0`;
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((h) => parseInt(h, 16)));
  const left = parse(head);
  const right = rest === undefined ? [] : parse(rest);
  const groups = rest === undefined ? left : [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  if (groups.length !== 8) return null;
  const bytes = groups.flatMap((g) => [(g >> 8) & 0xff, g & 0xff]);
  if (tail) bytes.splice(12, 4, ...tailBytes);
  return bytes;
}

const matchingBlock = (bytes: number[]) => BLOCKS[bytes.length === 4 ? 4 : 6].find((block) => inBlock(bytes, block));

/**
 * The IPv4 addresses an IPv6 address carries (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96,
 * 6to4, Teredo's server and client), dotted; empty when it carries none.
 */
export function embeddedIpv4s(address: string): string[] {
  const bytes = ipv6Bytes(address);
  const block = bytes ? matchingBlock(bytes) : undefined;
  if (!bytes || block?.verdict.kind !== 'embedded') return [];
  return block.verdict.extract(bytes).map((v4) => v4.join('.'));
}

/** The first IPv4 address an IPv6 address carries (the client's, for Teredo: the last one), or null. */
export function embeddedIpv4(address: string): string | null {
  const all = embeddedIpv4s(address);
  return all[all.length - 1] ?? null;
}

/** Why `address` is not one a webhook may reach (not globally reachable), or null when it is one. */
export function refusalReason(address: string): string | null {
  const bytes = addressBytes(address);
  if (!bytes) return 'not an IP address';
  const block = matchingBlock(bytes);
  if (!block) {
    // IPv6 outside global unicast 2000::/3 is reserved by the IETF (IANA's IPv6 address space).
    return bytes.length === 16 && (bytes[0] as number) >> 5 !== 1 ? 'reserved' : null;
  }
  const verdict = block.verdict;
  if (verdict.kind === 'allow') return null;
  if (verdict.kind === 'refuse') return verdict.reason;
  for (const v4 of verdict.extract(bytes)) {
    const inner = refusalReason(v4.join('.'));
    if (inner !== null) return `${verdict.label} ${inner}`;
  }
  return null;
}

export interface AllowList {
  /** Lower-case host names (a leading `*.` admits subdomains). */
  hosts: readonly string[];
  /** Addresses and CIDRs, e.g. `127.0.0.1`, `10.1.0.0/16`, `::1/128`. */
  cidrs: readonly string[];
}

/** Splits WEBHOOK_ALLOW_HOSTS into host names and address ranges; throws on a malformed CIDR. */
export function parseAllowList(text: string | undefined): AllowList {
  const hosts: string[] = [];
  const cidrs: string[] = [];
  for (const raw of (text ?? '').split(/[\s,]+/)) {
    const entry = raw.trim().toLowerCase().replace(/^\[|\]$/g, '');
    if (entry === '') continue;
    if (net.isIP(entry) !== 0) cidrs.push(entry);
    else if (entry.includes('/')) {
      const [address = '', bits = ''] = entry.split('/');
      const family = net.isIP(address);
      const prefix = Number(bits);
      if (family === 0 || !/^\d+$/.test(bits) || prefix > (family === 4 ? 32 : 128)) {
        throw new Error(`not an address range: ${raw}`);
      }
      cidrs.push(entry);
    } else if (/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$/.test(entry)) {
      hosts.push(entry.replace(/\.$/, ''));
    } else {
      throw new Error(`not a host name, address or CIDR: ${raw}`);
    }
  }
  return { hosts, cidrs };
}

/** Decides what a webhook may connect to: public addresses, plus what the allow-list admits. */
export class AddressPolicy {
  private readonly allowed = new net.BlockList();
  private readonly hosts: readonly string[];

  constructor(allow: AllowList = { hosts: [], cidrs: [] }) {
    this.hosts = allow.hosts;
    for (const entry of allow.cidrs) {
      const [address = '', bits] = entry.split('/');
      const type = net.isIP(address) === 4 ? 'ipv4' : 'ipv6';
      if (bits === undefined) this.allowed.addAddress(address, type);
      else this.allowed.addSubnet(address, Number(bits), type);
    }
  }

  /** An allow-listed host name skips the address rules (the operator vouched for it). */
  hostAllowed(hostname: string): boolean {
    const host = hostname.toLowerCase().replace(/\.$/, '');
    return this.hosts.some((h) => (h.startsWith('*.') ? host.endsWith(h.slice(1)) : host === h));
  }

  /** Null when `address` may be connected to, else why not. */
  check(address: string): string | null {
    const family = net.isIP(address);
    if (family === 0) return 'not an IP address';
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (this.allowed.check(address, type)) return null;
    // An allow-listed IPv4 address is admitted in its IPv6 forms too (mapped, NAT64, …).
    const inner = family === 6 ? embeddedIpv4s(address) : [];
    if (inner.length > 0 && inner.every((v4) => this.allowed.check(v4, 'ipv4'))) return null;
    return refusalReason(address);
  }

  /**
   * Checks a webhook URL before anything is queued: http(s) only, no credentials, and a literal
   * address host must pass `check`. Names are left to the connect-time check (DNS may change).
   */
  checkUrl(url: string): string | null {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return 'must be an absolute http(s) URL';
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return 'must use http or https';
    if (parsed.username !== '' || parsed.password !== '') return 'must not carry credentials';
    const host = parsed.hostname.replace(/^\[|\]$/g, '');
    if (host === '') return 'must name a host';
    if (net.isIP(host) !== 0 && !this.hostAllowed(host)) {
      const reason = this.check(host);
      if (reason !== null) return `must not point at ${host} (${reason} address)`;
    }
    return null;
  }
}
