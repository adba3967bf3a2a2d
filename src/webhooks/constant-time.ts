import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * Compares two secrets in time that depends on neither their content nor their length:
 * both sides are hashed to 32 bytes first, so a wrong-length guess is not answered faster.
 */
export function secretsEqual(given: string | Buffer, expected: string | Buffer): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** True when `given` equals any of `accepted`; every candidate is compared, so timing does not tell which. */
export function matchesAny(given: string | Buffer, accepted: readonly (string | Buffer)[]): boolean {
  let matched = false;
  for (const candidate of accepted) matched = secretsEqual(given, candidate) || matched;
  return matched;
}
