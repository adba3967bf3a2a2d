import type { FastifyInstance } from 'fastify';
import { WebhookError } from '../errors.js';

/**
 * Inside a vendor plugin (Fastify parsers are encapsulated): keep JSON bodies as the exact bytes
 * received, for verification first; anything that is not JSON is refused with 415.
 */
export function acceptRawJson(app: FastifyInstance): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(/^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i, { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
}

const MAX_DEPTH = 64;

/** Depth of nesting in JSON text, ignoring brackets inside strings; stops early past the limit. */
function nestingExceeds(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > limit) return true;
    } else if (c === 125 || c === 93) depth--;
  }
  return false;
}

/**
 * Parses an authenticated body. Nesting deeper than any real payload is refused up front: the
 * database's JSON type would fail on it later with an error that is not the sender's fault to read.
 */
export function parseJsonBody(raw: Buffer): unknown {
  const text = raw.toString('utf8');
  if (nestingExceeds(text, MAX_DEPTH)) throw new WebhookError('WH_ERR_BAD_JSON', `The JSON is nested deeper than ${MAX_DEPTH} levels`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new WebhookError('WH_ERR_BAD_JSON');
  }
  // PostgreSQL's jsonb cannot hold a NUL character nor a lone UTF-16 surrogate (\ud800), which JSON
  // allows. Refusing them here makes a 400 the sender can act on, instead of a write that fails on
  // every retry. (Checked on the parsed strings: the text's "\\u0000" is an escaped backslash.)
  const unstorable = unstorableText(value);
  if (unstorable) throw new WebhookError('WH_ERR_BAD_JSON', `The JSON contains ${unstorable}, which cannot be stored`);
  return value;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const describeUnstorable = (text: string) => (text.includes('\u0000') ? 'a \\u0000 character' : LONE_SURROGATE.test(text) ? 'a lone UTF-16 surrogate' : undefined);

/** Every key and string, walked without recursion (nesting is already bounded). */
function unstorableText(root: unknown): string | undefined {
  const pending: unknown[] = [root];
  while (pending.length > 0) {
    const value = pending.pop();
    if (typeof value === 'string') {
      const found = describeUnstorable(value);
      if (found) return found;
    } else if (Array.isArray(value)) {
      // One by one: spread into push(), a large array exceeds the call's argument limit (RangeError).
      for (const item of value) pending.push(item);
    } else if (typeof value === 'object' && value !== null) {
      for (const [key, child] of Object.entries(value)) {
        const found = describeUnstorable(key);
        if (found) return found;
        pending.push(child);
      }
    }
  }
  return undefined;
}

/** PostgreSQL's numeric, which jsonb keeps numbers in: the most significant digit's place, and the digits after the point. */
const MAX_WEIGHT = 131_071;
const MAX_SCALE = 16_383;
const isDigit = (c: number) => c >= 48 && c <= 57;

/**
 * A number in valid JSON text that PostgreSQL's numeric cannot hold, so that storing the text as
 * jsonb would fail on every retry: its most significant digit beyond 10^131071 (1e131072), or more
 * than 16383 digits after the point once the exponent is applied (1e-16384, 1.0e-16383; trailing
 * zeros count). As PostgreSQL counts (numeric.c), checked against it in the tests. One pass over
 * the text, numbers read outside strings, nothing allocated.
 */
export function numberOutOfRange(text: string): string | undefined {
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      // A string: skip to its closing quote.
      for (i++; i < n; i++) {
        const s = text.charCodeAt(i);
        if (s === 92) i++;
        else if (s === 34) break;
      }
      continue;
    }
    if (c !== 45 && !isDigit(c)) continue;
    if (c === 45) i++;
    // Digits before the point, after it, and the first non-zero digit's place among them all.
    let intDigits = 0;
    let fracDigits = 0;
    let firstNonZero = -1;
    for (; i < n && isDigit(text.charCodeAt(i)); i++, intDigits++) if (firstNonZero < 0 && text.charCodeAt(i) !== 48) firstNonZero = intDigits;
    if (i < n && text.charCodeAt(i) === 46) {
      for (i++; i < n && isDigit(text.charCodeAt(i)); i++, fracDigits++) if (firstNonZero < 0 && text.charCodeAt(i) !== 48) firstNonZero = intDigits + fracDigits;
    }
    let exponent = 0;
    if (i < n && (text.charCodeAt(i) | 32) === 101) {
      i++;
      const negative = text.charCodeAt(i) === 45;
      if (negative || text.charCodeAt(i) === 43) i++;
      // Capped: any exponent past a billion is out of range either way.
      for (; i < n && isDigit(text.charCodeAt(i)); i++) exponent = Math.min(exponent * 10 + (text.charCodeAt(i) - 48), 1e9);
      if (negative) exponent = -exponent;
    }
    i--; // the loop's i++ moves past the number
    // Described, never quoted: the number is the sender's data.
    if (fracDigits - exponent > MAX_SCALE) return `more than ${MAX_SCALE} digits after the decimal point`;
    if (firstNonZero >= 0 && intDigits - 1 - firstNonZero + exponent > MAX_WEIGHT) return `a value of ${MAX_WEIGHT + 1} digits or more before the decimal point`;
  }
  return undefined;
}

const WHITESPACE = new Set([0x20, 0x09, 0x0a, 0x0d]);

function skipWhitespace(text: string, i: number): number {
  while (i < text.length && WHITESPACE.has(text.charCodeAt(i))) i++;
  return i;
}

/** The index just after the string that starts at `i` (a quote). */
function skipString(text: string, i: number): number {
  for (i += 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 92) i++;
    else if (c === 34) return i + 1;
  }
  return i;
}

/** The index just after the value that starts at `i`; iterative, brackets inside strings ignored. */
function skipValue(text: string, i: number): number {
  const first = text.charCodeAt(i);
  if (first === 34) return skipString(text, i);
  if (first !== 123 && first !== 91) {
    while (i < text.length && !WHITESPACE.has(text.charCodeAt(i)) && !',}]'.includes(text[i]!)) i++;
    return i;
  }
  let depth = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      i = skipString(text, i);
      continue;
    }
    if (c === 123 || c === 91) depth++;
    else if (c === 125 || c === 93) {
      depth--;
      if (depth === 0) return i + 1;
    }
    i++;
  }
  return i;
}

/**
 * The source text of each member of a JSON object, as sent: `{"id": 9007199254740993}` gives id →
 * "9007199254740993", where JSON.parse would give 9007199254740992. Of a key sent twice, the last
 * (as JSON.parse keeps). Only for text that JSON.parse has accepted; anything else gives an empty map.
 */
export function memberSources(text: string): Map<string, string> {
  const members = new Map<string, string>();
  let i = skipWhitespace(text, 0);
  if (text.charCodeAt(i) !== 123) return members;
  i = skipWhitespace(text, i + 1);
  while (i < text.length && text.charCodeAt(i) === 34) {
    const keyEnd = skipString(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = skipWhitespace(text, skipWhitespace(text, keyEnd) + 1); // past the colon
    const end = skipValue(text, i);
    members.set(key, text.slice(i, end));
    i = skipWhitespace(text, end);
    if (text.charCodeAt(i) !== 44) break;
    i = skipWhitespace(text, i + 1);
  }
  return members;
}
