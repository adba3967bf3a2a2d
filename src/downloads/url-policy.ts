import { isIP } from 'node:net';
import { classifyAddress } from './address-policy.js';

// Decides whether a file URL from an untrusted webhook payload may be fetched at all.
// Reasons name the host at most: the path and query of a file URL grant access to the PDF.

export type HostPattern =
  | { kind: 'exact'; host: string }
  /** `*.suffix`: any host strictly below `suffix`, never `suffix` itself. */
  | { kind: 'subdomain'; suffix: string };

export interface FileUrlPolicy {
  allowedHosts: readonly HostPattern[];
  /** Lets IP-literal hosts in private, loopback, … ranges through (local development only). */
  allowPrivateAddresses: boolean;
  /** Lets plain http: through for localhost and loopback addresses (local development only). */
  allowHttpLocalhost?: boolean;
  /** Name of the setting the operator edits, quoted in refusal reasons. */
  hostsSettingName?: string;
}

export type FileUrlCheck =
  | { ok: true; url: URL; host: string }
  | { ok: false; reason: string; host?: string };

const defaultHostsSettingName = 'PHYSITRACK_FILE_URL_HOSTS';
const hostLabel = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$/;

/** Lower case, without IPv6 brackets and without the one trailing dot DNS allows. */
function normaliseHost(host: string): string {
  const lower = host.trim().toLowerCase();
  const unbracketed = lower.startsWith('[') && lower.endsWith(']') ? lower.slice(1, -1) : lower;
  return unbracketed.endsWith('.') ? unbracketed.slice(0, -1) : unbracketed;
}

/** IPv6 patterns are written many ways (0:0::1, ::1); URL hosts always come out in one. */
function canonicalIp(host: string): string {
  return isIP(host) === 6 ? new URL(`https://[${host}]/`).hostname.slice(1, -1) : host;
}

function isHostName(host: string): boolean {
  return host.split('.').every((label) => hostLabel.test(label));
}

/**
 * Parses a comma-separated list such as `physitrack.com, *.physitrack.com, 127.0.0.1`.
 * Throws one error listing every entry that is neither a host name, an IP address nor `*.suffix`.
 */
export function parseHostPatterns(csv: string): HostPattern[] {
  const patterns: HostPattern[] = [];
  const problems: string[] = [];
  for (const entry of csv.split(',').map((item) => item.trim()).filter((item) => item !== '')) {
    const wildcard = entry.startsWith('*.');
    const host = normaliseHost(wildcard ? entry.slice(2) : entry);
    if (wildcard && isIP(host) === 0 && isHostName(host)) {
      patterns.push({ kind: 'subdomain', suffix: host });
    } else if (!wildcard && (isIP(host) !== 0 || isHostName(host))) {
      patterns.push({ kind: 'exact', host: canonicalIp(host) });
    } else {
      problems.push(`"${entry}"`);
    }
  }
  if (problems.length > 0) {
    throw new Error(
      `These allowed file hosts are not a host name, an IP address or "*.domain": ${problems.join(', ')}.`,
    );
  }
  return patterns;
}

export function hostMatchesPatterns(host: string, patterns: readonly HostPattern[]): boolean {
  const normalised = normaliseHost(host);
  return patterns.some((pattern) => {
    if (pattern.kind === 'exact') return normalised === pattern.host;
    // An IP address is never "below" a domain, whatever its digits look like.
    return isIP(normalised) === 0 && normalised.endsWith(`.${pattern.suffix}`) && isHostName(normalised);
  });
}

/** Hosts come from untrusted input; keep the sentence readable if someone sends a novel. */
/** localhost, or an IP literal in the loopback ranges. */
function isLocalhost(host: string): boolean {
  return host === 'localhost' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === '::1';
}

function shown(host: string): string {
  return host.length > 100 ? `${host.slice(0, 100)}…` : host;
}

export function checkFileUrl(url: string, policy: FileUrlPolicy): FileUrlCheck {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { ok: false, reason: 'the file URL is not a valid absolute URL' };
  }
  const host = normaliseHost(parsed.hostname);
  const localHttp = parsed.protocol === 'http:' && policy.allowHttpLocalhost === true && isLocalhost(host);
  if (parsed.protocol !== 'https:' && !localHttp) {
    const scheme = parsed.protocol.length <= 12 ? parsed.protocol : 'another scheme';
    return { ok: false, host, reason: `the file URL uses ${scheme} but only https: downloads are allowed` };
  }
  if (parsed.username !== '' || parsed.password !== '') {
    const reason = `the file URL for host ${shown(host)} contains a user name or password, which is never allowed`;
    return { ok: false, host, reason };
  }
  if (!hostMatchesPatterns(host, policy.allowedHosts)) {
    const setting = policy.hostsSettingName ?? defaultHostsSettingName;
    return { ok: false, host, reason: `the file URL's host ${shown(host)} is not in ${setting}` };
  }
  if (isIP(host) !== 0 && !policy.allowPrivateAddresses) {
    const verdict = classifyAddress(host);
    if (verdict.refused) {
      return { ok: false, host, reason: `the file URL's host ${host} is ${verdict.description}, which is refused` };
    }
  }
  return { ok: true, url: parsed, host };
}
