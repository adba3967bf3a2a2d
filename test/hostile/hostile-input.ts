import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { expect } from 'vitest';

/** Printable ASCII, the characters a header value may carry. */
export const printable = fc.integer({ min: 0x20, max: 0x7e }).map((code) => String.fromCharCode(code));

/**
 * Bodies with `__proto__`, `constructor` and `prototype` keys, at the top and inside `data`, written
 * as raw JSON text (an object literal would set the prototype instead of making a key).
 * `idField` gets a fresh unique value in each body; `fields` are copied in as they are.
 */
export function prototypeKeyBodies(fields: Record<string, unknown>, idField: string): string[] {
  const common = () => JSON.stringify({ ...fields, [idField]: `proto-${randomUUID()}` }).slice(0, -1);
  return [
    `${common()},"__proto__":{"polluted":"yes"},"data":{"__proto__":{"polluted":"yes"}}}`,
    `${common()},"constructor":{"prototype":{"polluted":"yes"}},"data":{"constructor":{"prototype":{"polluted":"yes"}}}}`,
    `${common()},"prototype":{"polluted":"yes"},"data":{"a":[{"__proto__":{"polluted":"yes"}}],"prototype":{"polluted":"yes"}}}`,
  ];
}

/** Nothing reached Object.prototype (or Array.prototype) along the way. */
export function expectNoPollution(): void {
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(([] as unknown as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted')).toBe(false);
}

export type Expected = [status: number, error?: string, reason?: string];

/** Sends and checks the exact answer; a 5xx fails whatever was expected. */
export async function expectAnswer(app: FastifyInstance, request: InjectOptions, [status, error, reason]: Expected): Promise<void> {
  const res = await app.inject(request);
  expect(res.statusCode, res.body).toBeLessThan(500);
  expect(res.statusCode, res.body).toBe(status);
  if (error) expect(res.json().error).toBe(error);
  if (reason) expect(res.json().message).toBe(`Authentication failed (${reason})`);
}
