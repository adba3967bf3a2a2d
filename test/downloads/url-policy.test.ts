import { describe, expect, it } from 'vitest';
import { checkFileUrl, hostMatchesPatterns, parseHostPatterns, type FileUrlPolicy } from '../../src/downloads/url-policy.js';

const secretPath = '/integrations/ehr/programs/pqokji.pdf?signature=s3cr3t';

function policy(hosts: string, allowPrivateAddresses = false): FileUrlPolicy {
  return { allowedHosts: parseHostPatterns(hosts), allowPrivateAddresses };
}

function refusal(url: string, rules: FileUrlPolicy): string {
  const result = checkFileUrl(url, rules);
  if (result.ok) throw new Error('expected a refusal');
  return result.reason;
}

describe('parseHostPatterns', () => {
  it('reads exact hosts and *.suffix patterns, lower-cased and without a trailing dot', () => {
    expect(parseHostPatterns(' Physitrack.com. , *.PhysiTrack.com,127.0.0.1,, [::1] ')).toEqual([
      { kind: 'exact', host: 'physitrack.com' },
      { kind: 'subdomain', suffix: 'physitrack.com' },
      { kind: 'exact', host: '127.0.0.1' },
      { kind: 'exact', host: '::1' },
    ]);
  });

  it('writes IPv6 patterns the way URLs write them', () => {
    expect(parseHostPatterns('0:0::1')).toEqual([{ kind: 'exact', host: '::1' }]);
  });

  it('refuses malformed entries, naming every one of them', () => {
    expect(() => parseHostPatterns('*, a.*.com, *foo.com, ok.com, https://x.com')).toThrow(
      /"\*", "a\.\*\.com", "\*foo\.com", "https:\/\/x\.com"/,
    );
  });

  it('refuses a wildcard over an IP address', () => {
    expect(() => parseHostPatterns('*.10.0.0.1')).toThrow(/"\*\.10\.0\.0\.1"/);
  });
});

describe('hostMatchesPatterns with *.physitrack.com', () => {
  const patterns = parseHostPatterns('*.physitrack.com');

  it.each(['a.physitrack.com', 'a.b.physitrack.com', 'STAGING.Physitrack.COM', 'a.physitrack.com.'])('matches %s', (host) => {
    expect(hostMatchesPatterns(host, patterns)).toBe(true);
  });

  it.each(['physitrack.com', 'evilphysitrack.com', 'physitrack.com.evil.org', 'a.physitrack.co', '.physitrack.com', 'a..physitrack.com'])(
    'does not match %s',
    (host) => {
      expect(hostMatchesPatterns(host, patterns)).toBe(false);
    },
  );

  it('matches the bare domain only when it is listed on its own', () => {
    expect(hostMatchesPatterns('physitrack.com', parseHostPatterns('physitrack.com, *.physitrack.com'))).toBe(true);
    expect(hostMatchesPatterns('a.physitrack.com', parseHostPatterns('physitrack.com'))).toBe(false);
  });
});

describe('checkFileUrl', () => {
  const physitrack = policy('*.physitrack.com');

  it('accepts an https URL on an allowed host, on any port', () => {
    const result = checkFileUrl(`https://staging.physitrack.com:8443${secretPath}`, physitrack);
    expect(result).toMatchObject({ ok: true, host: 'staging.physitrack.com' });
  });

  it('normalises a trailing dot on the host', () => {
    expect(checkFileUrl(`https://staging.physitrack.com.${secretPath}`, physitrack)).toMatchObject({ ok: true, host: 'staging.physitrack.com' });
  });

  it('refuses something that is not a URL', () => {
    expect(refusal('not a url', physitrack)).toBe('the file URL is not a valid absolute URL');
  });

  it.each(['http://staging.physitrack.com/a.pdf', 'file:///etc/passwd', 'ftp://staging.physitrack.com/a.pdf'])('refuses the scheme of %s', (url) => {
    expect(refusal(url, physitrack)).toMatch(/only https: downloads are allowed/);
  });

  it('refuses a user name or password in the URL', () => {
    expect(refusal('https://user:pw@staging.physitrack.com/a.pdf', physitrack)).toMatch(/user name or password/);
    expect(refusal('https://user@staging.physitrack.com/a.pdf', physitrack)).toMatch(/user name or password/);
  });

  it('refuses a host outside the list, naming the host and the setting but not the path', () => {
    const reason = refusal(`https://example.org${secretPath}`, physitrack);
    expect(reason).toBe("the file URL's host example.org is not in PHYSITRACK_FILE_URL_HOSTS");
  });

  it('names the setting the caller configured', () => {
    const reason = refusal('https://example.org/a.pdf', { ...physitrack, hostsSettingName: 'FILE_HOSTS' });
    expect(reason).toMatch(/not in FILE_HOSTS$/);
  });

  it('never puts the path or query in a reason', () => {
    for (const url of [`http://example.org${secretPath}`, `https://u:p@example.org${secretPath}`, `https://example.org${secretPath}`]) {
      expect(refusal(url, physitrack)).not.toMatch(/pqokji|s3cr3t/);
    }
  });

  it('refuses the cloud metadata address even when it is listed', () => {
    const reason = refusal('https://169.254.169.254/latest/meta-data', policy('169.254.169.254'));
    expect(reason).toMatch(/169\.254\.169\.254 is a link-local address/);
  });

  it('refuses numeric spellings of loopback that URLs normalise to 127.0.0.1', () => {
    const listed = policy('127.0.0.1');
    expect(refusal('https://2130706433/a.pdf', listed)).toMatch(/127\.0\.0\.1 is a loopback address/);
    expect(refusal('https://0x7f.1/a.pdf', listed)).toMatch(/127\.0\.0\.1 is a loopback address/);
  });

  it('refuses IPv4-mapped and IPv6 loopback literals', () => {
    expect(refusal('https://[::ffff:127.0.0.1]/a.pdf', policy('::ffff:127.0.0.1'))).toMatch(/loopback/);
    expect(refusal('https://[::1]/a.pdf', policy('::1'))).toMatch(/loopback/);
  });

  it('lets listed private literals through when private addresses are allowed', () => {
    expect(checkFileUrl('https://127.0.0.1:4443/a.pdf', policy('127.0.0.1', true))).toMatchObject({ ok: true, host: '127.0.0.1' });
    expect(checkFileUrl('https://[::1]/a.pdf', policy('::1', true))).toMatchObject({ ok: true, host: '::1' });
  });
});

describe('plain http for localhost (development only)', () => {
  const hosts = parseHostPatterns('files.physitrack.com,localhost,127.0.0.1');
  it('lets http: through for localhost and loopback addresses only when allowed, and never elsewhere', () => {
    const dev = { allowedHosts: hosts, allowPrivateAddresses: true, allowHttpLocalhost: true };
    const strict = { allowedHosts: hosts, allowPrivateAddresses: true };
    expect(checkFileUrl('http://127.0.0.1:8080/p.pdf', dev).ok).toBe(true);
    expect(checkFileUrl('http://localhost:8080/p.pdf', dev).ok).toBe(true);
    expect(checkFileUrl('http://files.physitrack.com/p.pdf', dev)).toMatchObject({ ok: false, reason: expect.stringMatching(/only https/) });
    expect(checkFileUrl('http://127.0.0.1:8080/p.pdf', strict)).toMatchObject({ ok: false, reason: expect.stringMatching(/only https/) });
  });
});
