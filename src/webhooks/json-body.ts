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
  const outOfRange = numberOutOfRange(text);
  if (outOfRange) throw new WebhookError('WH_ERR_BAD_JSON', `The JSON contains a number that cannot be stored exactly (${outOfRange})`);
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

/** PostgreSQL's numeric, which jsonb keeps numbers in: at most this many digits before the point, and after. */
const MAX_INTEGER_DIGITS = 131_072;
const MAX_FRACTION_DIGITS = 16_383;
const NUMBER = /-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?/g;

/**
 * A number whose value PostgreSQL's numeric cannot hold (1e131072, 1e-16384, or 140,000 digits):
 * the write would fail on every retry. Numbers are read outside strings, one linear pass.
 */
function numberOutOfRange(text: string): string | undefined {
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++;
      else if (c === 34) inString = false;
      continue;
    }
    if (c === 34) {
      inString = true;
      continue;
    }
    if (c !== 45 && (c < 48 || c > 57)) continue;
    NUMBER.lastIndex = i;
    const match = NUMBER.exec(text);
    let end = i;
    while (end < text.length && /[-+.\deE]/.test(text[end]!)) end++;
    if (match && match.index === i && NUMBER.lastIndex === end) {
      const [, integer, fraction = '', exponentText = '0'] = match;
      const exponent = Number(exponentText);
      const significant = integer!.replace(/^0+/, '') + fraction;
      if (/[1-9]/.test(significant)) {
        const integerDigits = integer!.replace(/^0+/, '').length + exponent;
        const fractionDigits = fraction.replace(/0+$/, '').length - exponent;
        // Described, never quoted: the number is the sender's data, and the reason is logged.
        if (integerDigits > MAX_INTEGER_DIGITS) return `over ${MAX_INTEGER_DIGITS} digits before the decimal point`;
        if (fractionDigits > MAX_FRACTION_DIGITS) return `over ${MAX_FRACTION_DIGITS} digits after the decimal point`;
      }
    }
    i = end - 1;
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
