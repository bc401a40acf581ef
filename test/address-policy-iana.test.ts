import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { addressBytes, AddressPolicy, embeddedIpv4s, refusalReason } from '../shared/webhooks/address-policy.js';

/**
 * The SSRF guard against IANA's Special-Purpose Address Registries (test/fixtures/iana-special-
 * purpose.json, transcribed from them, with sources): every block that is not globally reachable
 * is refused at its first, last and a middle address; globally reachable ones are admitted; the
 * forms that embed an IPv4 address are judged by that address.
 */
interface Entry {
  block: string;
  name: string;
  global: boolean | null;
  embedsIpv4?: boolean;
}
const registry = JSON.parse(readFileSync(new URL('./fixtures/iana-special-purpose.json', import.meta.url), 'utf8')) as Record<'ipv4' | 'ipv6' | 'other', Entry[]>;
const entries = [...registry.ipv4, ...registry.ipv6, ...registry.other];

function parseBlock(block: string): { bytes: number[]; prefix: number } {
  const [address = '', bits = ''] = block.split('/');
  return { bytes: addressBytes(address) as number[], prefix: Number(bits) };
}

function contains(outer: string, address: number[]): boolean {
  const { bytes, prefix } = parseBlock(outer);
  if (bytes.length !== address.length) return false;
  for (let i = 0; i < prefix; i++) {
    const bit = (b: number[]) => ((b[i >> 3] as number) >> (7 - (i & 7))) & 1;
    if (bit(bytes) !== bit(address)) return false;
  }
  return true;
}

const toText = (bytes: number[]) =>
  bytes.length === 4 ? bytes.join('.') : Array.from({ length: 8 }, (_, i) => (((bytes[2 * i] as number) << 8) | (bytes[2 * i + 1] as number)).toString(16)).join(':');

/** The block's first and last address and one in between, skipping any a more specific entry decides. */
function samples(entry: Entry): string[] {
  const { bytes, prefix } = parseBlock(entry.block);
  const pick = (fill: (bit: number) => number) =>
    bytes.map((byte, i) => {
      let out = byte;
      for (let b = 0; b < 8; b++) {
        const bit = i * 8 + b;
        if (bit >= prefix) out = (out & ~(0x80 >> b)) | (fill(bit) ? 0x80 >> b : 0);
      }
      return out;
    });
  const candidates = [pick(() => 0), pick(() => 1), pick((bit) => (bit * 7919) % 3 === 0 ? 1 : 0)];
  const moreSpecific = entries.filter((e) => e !== entry && parseBlock(e.block).prefix > prefix && contains(entry.block, parseBlock(e.block).bytes));
  return [...new Set(candidates.filter((c) => !moreSpecific.some((e) => contains(e.block, c))).map(toText))];
}

const PUBLIC_V4 = ['8.8.8.8', '93.184.216.34'];
const INTERNAL_V4 = ['10.0.0.1', '127.0.0.1', '169.254.169.254', '192.168.1.1', '100.64.0.1', '0.1.2.3', '192.0.2.7'];

/** An address of an embedding block that carries `v4` (for Teredo: as the client, behind a public server). */
function embedding(block: string, v4: string): string {
  const [a, b, c, d] = v4.split('.').map(Number) as [number, number, number, number];
  const hex = (x: number, y: number) => ((x << 8) | y).toString(16);
  switch (block) {
    case '::ffff:0:0/96':
      return `::ffff:${v4}`;
    case '::/96':
      return `::${v4}`;
    case '64:ff9b::/96':
      return `64:ff9b::${v4}`;
    case '2002::/16':
      return `2002:${hex(a, b)}:${hex(c, d)}::1`;
    case '2001::/32':
      return `2001:0:808:808:0:0:${hex(a ^ 0xff, b ^ 0xff)}:${hex(c ^ 0xff, d ^ 0xff)}`;
    default:
      throw new Error(`no embedding for ${block}`);
  }
}

describe('the SSRF guard against the IANA special-purpose registries', () => {
  it('reads a complete fixture', () => {
    expect(registry.ipv4.length).toBeGreaterThanOrEqual(25);
    expect(registry.ipv6.length).toBeGreaterThanOrEqual(25);
    for (const entry of entries) expect(addressBytes(entry.block.split('/')[0] as string), entry.block).not.toBeNull();
  });

  it.each(entries.filter((e) => e.global === false && !e.embedsIpv4).map((e) => [e.block, e.name] as const))(
    'refuses %s (%s), not globally reachable, at every sampled address',
    (block) => {
      const entry = entries.find((e) => e.block === block)!;
      const addresses = samples(entry);
      expect(addresses.length, block).toBeGreaterThan(0);
      for (const address of addresses) {
        expect(refusalReason(address), address).not.toBeNull();
        expect(new AddressPolicy().check(address), address).not.toBeNull();
      }
    },
  );

  it.each(entries.filter((e) => e.global === true && !e.embedsIpv4).map((e) => [e.block, e.name] as const))(
    'admits %s (%s), globally reachable',
    (block) => {
      for (const address of samples(entries.find((e) => e.block === block)!)) expect(refusalReason(address), address).toBeNull();
    },
  );

  it.each(entries.filter((e) => e.global === null && !e.embedsIpv4).map((e) => [e.block, e.name] as const))(
    'refuses %s (%s): deprecated, N/A in the registry',
    (block) => {
      for (const address of samples(entries.find((e) => e.block === block)!)) expect(refusalReason(address), address).not.toBeNull();
    },
  );

  it.each(entries.filter((e) => e.embedsIpv4).map((e) => [e.block, e.name] as const))(
    'judges %s (%s) by the IPv4 address it carries',
    (block) => {
      for (const v4 of PUBLIC_V4) {
        const address = embedding(block, v4);
        expect(embeddedIpv4s(address), address).toContain(v4);
        expect(refusalReason(address), address).toBeNull();
      }
      for (const v4 of INTERNAL_V4) {
        const address = embedding(block, v4);
        expect(embeddedIpv4s(address), address).toContain(v4);
        expect(refusalReason(address), address).toMatch(/^(IPv4-mapped|IPv4-compatible|NAT64|6to4|Teredo) /);
      }
    },
  );

  it("refuses Teredo whose server is internal even with a public client, and local-use NAT64 whatever it carries", () => {
    expect(refusalReason('2001:0:a00:1:0:0:f7f7:f7f7')).toMatch(/^Teredo private/);
    expect(refusalReason('64:ff9b:1::8.8.8.8')).toBe('local-use NAT64');
    expect(refusalReason('64:ff9b:1:ffff::a00:1')).toBe('local-use NAT64');
  });

  it('admits ordinary public addresses', () => {
    for (const address of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '192.0.1.1', '2606:4700:4700::1111', '2a00:1450:4001::1', '2001:200::1']) {
      expect(refusalReason(address), address).toBeNull();
    }
  });
});
