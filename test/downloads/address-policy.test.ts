import { describe, expect, it } from 'vitest';
import { classifyAddress, isRefusedAddress, type RefusedAddressKind } from '../../src/downloads/address-policy.js';

function kindOf(address: string): RefusedAddressKind | 'allowed' {
  const verdict = classifyAddress(address);
  return verdict.refused ? verdict.kind : 'allowed';
}

describe('classifyAddress', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'carrier-grade-nat'],
    ['100.127.255.255', 'carrier-grade-nat'],
    ['169.254.169.254', 'link-local'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved'],
    ['192.0.2.10', 'reserved'],
    ['198.18.0.1', 'reserved'],
  ])('refuses IPv4 %s as %s', (address, kind) => {
    expect(kindOf(address)).toBe(kind);
  });

  it.each(['8.8.8.8', '1.1.1.1', '172.15.255.255', '172.32.0.0', '100.63.255.255', '100.128.0.0', '169.253.255.255', '192.169.0.1', '223.255.255.255'])(
    'allows public IPv4 %s',
    (address) => {
      expect(kindOf(address)).toBe('allowed');
    },
  );

  it.each([
    ['::1', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback'],
    ['::', 'unspecified'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fc00::1', 'unique-local'],
    ['fd12:3456:789a::1', 'unique-local'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'reserved'],
    ['2001:0:4136:e378::1', 'reserved'], // Teredo
    ['fec0::1', 'reserved'], // deprecated site-local
    ['::7f00:1', 'reserved'], // IPv4-compatible
    ['100::1', 'reserved'], // discard-only
  ])('refuses IPv6 %s as %s', (address, kind) => {
    expect(kindOf(address)).toBe(kind);
  });

  it.each(['2606:4700:4700::1111', '2a00:1450:4001:80b::200e', '[2606:4700:4700::1111]'])('allows public IPv6 %s', (address) => {
    expect(kindOf(address)).toBe('allowed');
  });

  it.each([
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::FFFF:169.254.169.254', 'link-local'],
    ['::ffff:10.0.0.1', 'private'],
    ['::ffff:0.0.0.0', 'unspecified'],
    ['0:0:0:0:0:ffff:c0a8:0101', 'private'],
  ])('judges IPv4-mapped %s as the IPv4 address it maps to (%s)', (address, kind) => {
    expect(kindOf(address)).toBe(kind);
  });

  it('allows an IPv4-mapped public address', () => {
    expect(kindOf('::ffff:8.8.8.8')).toBe('allowed');
  });

  it.each([
    ['64:ff9b::127.0.0.1', 'loopback'],
    ['64:ff9b::a9fe:a9fe', 'link-local'],
    ['2002:7f00:1::', 'loopback'],
    ['2002:c0a8:0101::1', 'private'],
  ])('judges NAT64 and 6to4 %s by their embedded IPv4 address (%s)', (address, kind) => {
    expect(kindOf(address)).toBe(kind);
  });

  it('allows NAT64 and 6to4 addresses that embed a public IPv4 address', () => {
    expect(kindOf('64:ff9b::8.8.8.8')).toBe('allowed');
    expect(kindOf('2002:808:808::1')).toBe('allowed');
  });

  it('refuses text that is not an IP address', () => {
    expect(kindOf('localhost')).toBe('not-an-address');
    expect(kindOf('127.1')).toBe('not-an-address');
    expect(isRefusedAddress('')).toBe(true);
  });

  it('describes a refusal in words', () => {
    expect(classifyAddress('169.254.169.254')).toMatchObject({ refused: true, description: expect.stringContaining('link-local') });
  });
});
