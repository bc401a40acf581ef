import net from 'node:net';

/**
 * Which addresses a webhook may reach (the SSRF guard). A receiver URL is checked twice: at
 * submission when its host is a literal address, and at connect time against every address DNS
 * returned, so a name that resolves (or rebinds) to an internal address is refused where it counts.
 * An explicit allow-list (WEBHOOK_ALLOW_HOSTS: host names, addresses, CIDRs) admits what the
 * rules would refuse, e.g. loopback receivers in tests.
 */

/** Ranges no webhook may reach unless allow-listed, with the reason reported to the client. */
const BLOCKED_V4: [string, number, string][] = [
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'carrier-grade NAT'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'IETF protocol assignments'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
];
const BLOCKED_V6: [string, number, string][] = [
  ['::', 128, 'unspecified'],
  ['::1', 128, 'loopback'],
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'site-local'],
  ['fc00::', 7, 'unique-local'],
  ['ff00::', 8, 'multicast'],
];

const blocked = (() => {
  const list: { family: 'ipv4' | 'ipv6'; block: net.BlockList; reason: string }[] = [];
  for (const [address, prefix, reason] of BLOCKED_V4) {
    const block = new net.BlockList();
    block.addSubnet(address, prefix, 'ipv4');
    list.push({ family: 'ipv4', block, reason });
  }
  for (const [address, prefix, reason] of BLOCKED_V6) {
    const block = new net.BlockList();
    block.addSubnet(address, prefix, 'ipv6');
    list.push({ family: 'ipv6', block, reason });
  }
  return list;
})();

/** The 16 bytes of an IPv6 address (dotted IPv4 tail allowed), or null when it is not one. */
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

/** The IPv4 address an IPv6 one carries (IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96), if any. */
export function embeddedIpv4(address: string): string | null {
  const bytes = ipv6Bytes(address);
  if (!bytes) return null;
  const zeros = (from: number, to: number) => bytes.slice(from, to).every((b) => b === 0);
  const mapped = zeros(0, 10) && bytes[10] === 0xff && bytes[11] === 0xff;
  const nat64 = bytes[0] === 0x00 && bytes[1] === 0x64 && bytes[2] === 0xff && bytes[3] === 0x9b && zeros(4, 12);
  return mapped || nat64 ? bytes.slice(12).join('.') : null;
}

/** Why `address` is not a public unicast address, or null when it is one. */
export function refusalReason(address: string): string | null {
  const family = net.isIP(address);
  if (family === 0) return 'not an IP address';
  if (family === 6) {
    const v4 = embeddedIpv4(address);
    if (v4 !== null) {
      const inner = refusalReason(v4);
      return inner === null ? null : `IPv4-mapped ${inner}`;
    }
  }
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const entry of blocked) {
    if (entry.family === type && entry.block.check(address, type)) return entry.reason;
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
    const v4 = family === 6 ? embeddedIpv4(address) : null;
    if (v4 !== null && this.allowed.check(v4, 'ipv4')) return null;
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
