import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { preferredWaitS } from '../api/waiting.js';
import { scheduledDelay } from '../notifier/delivery-processor.js';
import { parseRetryAfter } from '../notifier/http-delivery.js';
import { loadConfig } from '../shared/config.js';
import { AddressPolicy, embeddedIpv4, parseAllowList, refusalReason } from '../shared/webhooks/address-policy.js';
import { parseSchedule, withJitter } from '../shared/webhooks/schedule.js';
import { signedHeaders } from '../shared/webhooks/signing.js';

/** Pure parts of webhooks: the SSRF address rules, signatures, schedules and header parsing. */

const secret = () => `whsec_${randomBytes(32).toString('base64')}`;

describe('address policy (SSRF guard)', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['10.0.0.1', 'private'],
    ['172.16.5.4', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'link-local'],
    ['100.64.0.1', 'carrier-grade NAT'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.251', 'multicast'],
    ['255.255.255.255', 'limited broadcast'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.10', 'documentation (TEST-NET-1)'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['fd12:3456::1', 'unique-local'],
    ['fc00::1', 'unique-local'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'IPv4-mapped loopback'],
    ['::ffff:7f00:1', 'IPv4-mapped loopback'],
    ['::ffff:a9fe:a9fe', 'IPv4-mapped link-local'],
    ['64:ff9b::10.0.0.1', 'NAT64 private'],
    ['::10.0.0.1', 'IPv4-compatible private'],
    ['2002:a00:1::1', '6to4 private'],
  ])('refuses %s (%s)', (address, reason) => {
    expect(refusalReason(address)).toBe(reason);
    expect(new AddressPolicy().check(address)).toBe(reason);
  });

  it.each(['93.184.216.34', '8.8.8.8', '172.32.0.1', '100.128.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8'])('admits public %s', (address) => {
    expect(refusalReason(address)).toBeNull();
  });

  it('reads the IPv4 address inside mapped, NAT64, 6to4 and Teredo IPv6 addresses', () => {
    expect(embeddedIpv4('::ffff:7f00:1')).toBe('127.0.0.1');
    expect(embeddedIpv4('::ffff:192.168.0.1')).toBe('192.168.0.1');
    expect(embeddedIpv4('64:ff9b::a00:1')).toBe('10.0.0.1');
    expect(embeddedIpv4('2002:c000:22a::1')).toBe('192.0.2.42');
    expect(embeddedIpv4('2001:0:808:808::f5ff:fffe')).toBe('10.0.0.1');
    expect(embeddedIpv4('2001:db8::1')).toBeNull();
  });

  it('lets the allow-list admit addresses, ranges and host names', () => {
    const policy = new AddressPolicy(parseAllowList('127.0.0.1, 10.1.0.0/16 hooks.internal *.corp.example'));
    expect(policy.check('127.0.0.1')).toBeNull();
    expect(policy.check('::ffff:127.0.0.1')).toBeNull();
    expect(policy.check('127.0.0.2')).toBe('loopback');
    expect(policy.check('10.1.200.3')).toBeNull();
    expect(policy.check('10.2.0.1')).toBe('private');
    expect(policy.hostAllowed('hooks.internal')).toBe(true);
    expect(policy.hostAllowed('a.corp.example')).toBe(true);
    expect(policy.hostAllowed('corp.example.evil.com')).toBe(false);
    expect(() => parseAllowList('10.0.0.0/33')).toThrow(/address range/);
    expect(() => parseAllowList('bad!host')).toThrow(/not a host name/);
    expect(() => parseAllowList('http://x')).toThrow(/not an address range/);
  });

  it('checks URLs at submission: http(s) only, literal internal addresses refused, names left to connect time', () => {
    const policy = new AddressPolicy();
    expect(policy.checkUrl('https://example.com/hook')).toBeNull();
    expect(policy.checkUrl('http://localhost:9/hook')).toBeNull();
    expect(policy.checkUrl('ftp://example.com/hook')).toMatch(/http or https/);
    expect(policy.checkUrl('file:///etc/passwd')).toMatch(/http or https/);
    expect(policy.checkUrl('http://user:pw@example.com/')).toMatch(/credentials/);
    expect(policy.checkUrl('http://10.0.0.1/hook')).toMatch(/10\.0\.0\.1 \(private address\)/);
    expect(policy.checkUrl('http://169.254.169.254/latest/meta-data/')).toMatch(/link-local/);
    expect(policy.checkUrl('http://[::ffff:127.0.0.1]:80/')).toMatch(/loopback/);
    // WHATWG URL parsing normalises numeric hosts, so these are caught as the address they are.
    expect(policy.checkUrl('http://2130706433/')).toMatch(/127\.0\.0\.1 \(loopback/);
    expect(policy.checkUrl('http://0x7f.1/')).toMatch(/loopback/);
  });
});

describe('Standard Webhooks signatures', () => {
  it('verifies with the standardwebhooks package, for every secret of a rotation', () => {
    const a = secret();
    const b = secret();
    const body = JSON.stringify({ type: 'job.completed', timestamp: new Date().toISOString(), data: { id: 'x', status: 'succeeded' } });
    const headers = signedHeaders([a, b], 'msg_abc_completed', body);
    expect(headers['webhook-signature']!.split(' ')).toHaveLength(2);
    expect(headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/=]+ v1,[A-Za-z0-9+/=]+$/);
    expect(new Webhook(a).verify(body, headers)).toEqual(JSON.parse(body));
    expect(new Webhook(b).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(secret()).verify(body, headers)).toThrow();
    expect(() => new Webhook(a).verify(`${body} `, headers)).toThrow();
  });
});

describe('schedules and headers', () => {
  it('parses the retry schedule, Svix-like by default', () => {
    expect(parseSchedule('0,5s,5m,30m,2h,5h,10h,10h')).toEqual([0, 5000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000]);
    expect(parseSchedule('0, 250ms, 1.5')).toEqual([0, 250, 1500]);
    expect(() => parseSchedule('0,soon')).toThrow(/duration/);
    expect(loadConfig({}).webhooks.retryScheduleMs).toHaveLength(8);
  });

  it('jitters by ±20 % and repeats the last delay past the end', () => {
    expect(withJitter(1000, () => 0)).toBe(800);
    expect(withJitter(1000, () => 0.999999)).toBe(1200);
    expect(scheduledDelay([0, 100, 200], 1, () => 0.5)).toBe(100);
    expect(scheduledDelay([0, 100, 200], 7, () => 0.5)).toBe(200);
  });

  it('reads Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('2')).toBe(2000);
    expect(parseRetryAfter(new Date(Date.UTC(2030, 0, 1, 0, 0, 10)).toUTCString(), Date.UTC(2030, 0, 1))).toBe(10_000);
    expect(parseRetryAfter('soon')).toBeNull();
    expect(parseRetryAfter(undefined)).toBeNull();
  });

  it('reads Prefer: wait=N, capped', () => {
    expect(preferredWaitS('wait=5', 60)).toBe(5);
    expect(preferredWaitS('respond-async, wait=500', 60)).toBe(60);
    expect(preferredWaitS('wait', 60)).toBe(60);
    expect(preferredWaitS('return=minimal', 60)).toBeNull();
    expect(preferredWaitS(undefined, 60)).toBeNull();
  });
});

describe('configuration', () => {
  it('keeps only hashes of API keys and checks secrets, schedule and allow-list', () => {
    const config = loadConfig({ API_KEYS: 'key-one-0123456789, key-two-0123456789', WEBHOOK_SECRETS: `${secret()} ${secret()}` });
    expect(config.auth.apiKeyHashes).toHaveLength(2);
    expect(JSON.stringify(config)).not.toContain('key-one');
    expect(config.webhooks.secrets).toHaveLength(2);
    expect(() => loadConfig({ API_KEYS: 'short' })).toThrow(/API_KEYS: each key must be at least 16 characters/);
    expect(() => loadConfig({ WEBHOOK_SECRETS: 'plain-secret' })).toThrow(/WEBHOOK_SECRETS: a webhook secret starts with whsec_/);
    expect(() => loadConfig({ WEBHOOK_SECRETS: 'whsec_c2hvcnQ=' })).toThrow(/24 to 64 bytes/);
    expect(() => loadConfig({ WEBHOOK_RETRY_SCHEDULE: '0,later' })).toThrow(/WEBHOOK_RETRY_SCHEDULE/);
    expect(() => loadConfig({ WEBHOOK_ALLOW_HOSTS: '10.0.0.0/99' })).toThrow(/WEBHOOK_ALLOW_HOSTS/);
  });
});
