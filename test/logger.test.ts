import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { CENSOR, REDACTED_KEYS, redactLine } from '../src/logger.js';
import { captureLogs } from './helpers/logs.js';

const SECRET = 'secret-value-4f1c9a';

describe('the production logger', () => {
  it('replaces secrets in fields, child bindings, nested objects, arrays and errors', () => {
    const logs = captureLogs();
    const child = logs.logger.child({ token: SECRET, component: 'worker' });
    const err = Object.assign(new Error('refused'), { fileUrl: `https://files.example/${SECRET}.pdf` });
    child.info(
      {
        upstream: { method: 'POST', headers: { Authorization: `Bearer ${SECRET}`, 'x-patiro-hmacsha256': SECRET, 'content-type': 'application/json' } },
        deliveries: [{ patient_id: SECRET, id: 7 }, { api_key: SECRET }],
        databaseUrl: `postgres://user:${SECRET}@db/receiver`,
        err,
      },
      'something happened',
    );
    expect(logs.lines.join('\n')).not.toContain(SECRET);
    const [entry] = logs.entries();
    expect(entry).toMatchObject({
      token: CENSOR,
      component: 'worker',
      upstream: { method: 'POST', headers: { Authorization: CENSOR, 'x-patiro-hmacsha256': CENSOR, 'content-type': 'application/json' } },
      deliveries: [{ patient_id: CENSOR, id: 7 }, { api_key: CENSOR }],
      databaseUrl: CENSOR,
      err: { message: 'refused', fileUrl: CENSOR },
      msg: 'something happened',
    });
  });

  it("replaces Patiro's documented patient fields outside an event's data too", () => {
    const logs = captureLogs();
    const fields = ['fullName', 'email', 'phoneNumber', 'birthdate', 'caregiver', 'zipCode', 'city', 'weightInKg', 'heightInCm'];
    const patient = Object.fromEntries(fields.map((name) => [name, `${name}-${SECRET}`]));
    logs.logger.info({ event: { data: { ...patient } }, patient, practitioner_token: SECRET }, 'patient');
    expect(logs.lines.join('\n')).not.toContain(SECRET);
    expect(logs.entries()[0]).toMatchObject({ event: { data: CENSOR }, patient: Object.fromEntries(fields.map((name) => [name, CENSOR])) });
  });

  it('replaces every secret of a loaded config', () => {
    const secrets = {
      DATABASE_URL: `postgres://receiver:${SECRET}-db@db/receiver`,
      PATIRO_SIGNING_SECRET: `${SECRET}-signing-1,${SECRET}-signing-2`,
      PATIRO_TOKEN: `${SECRET}-query-token`,
      PATIRO_BASIC_AUTH: `patiro:${SECRET}-basic-password`,
      PHYSITRACK_API_KEY: `${SECRET}-api-key`,
      PHYSITRACK_TOKENS: `${SECRET}-practitioner-1,${SECRET}-practitioner-2`,
      SOURCES_SECRET_KEY: Buffer.from(`${SECRET}-aes-256-key`.padEnd(32, '0')).toString('base64'),
    };
    const logs = captureLogs();
    logs.logger.info({ config: loadConfig({ NODE_ENV: 'test', ...secrets }) }, 'configuration');
    expect(logs.lines).toHaveLength(1);
    expect(logs.lines[0]).not.toContain(SECRET);
    expect(logs.entries()[0]).toMatchObject({
      config: { databaseUrl: CENSOR, patiro: { signingSecrets: CENSOR, token: CENSOR, basicAuth: CENSOR }, physitrack: { apiKeys: CENSOR, tokens: CENSOR }, sources: { secretKeys: CENSOR } },
    });
  });

  it("replaces a source's secrets and basic auth, should a loaded source be logged", () => {
    const logs = captureLogs();
    const source = { id: 'clinicaaaaaaaaaaaaaa', vendor: 'patiro', secrets: [{ value: `${SECRET}-signing`, addedAt: '2026-12-01T00:00:00Z', notAfter: null }], token: null, basicAuth: `patiro:${SECRET}` };
    logs.logger.info({ source }, 'source');
    expect(logs.lines[0]).not.toContain(SECRET);
    expect(logs.entries()[0]).toMatchObject({ source: { id: 'clinicaaaaaaaaaaaaaa', secrets: CENSOR, basicAuth: CENSOR } });
  });

  it('names every key in lower case, as keys are compared', () => {
    expect([...REDACTED_KEYS].filter((key) => key !== key.toLowerCase())).toEqual([]);
  });

  it('drops a line it cannot parse rather than write it unchecked', () => {
    const written = redactLine(`{"token":"${SECRET}", not json\n`);
    expect(written).not.toContain(SECRET);
    expect(written.endsWith('\n')).toBe(true);
    expect(JSON.parse(written)).toMatchObject({ level: 50, msg: 'a log line could not be checked for secrets and was dropped' });
  });

  it('writes a line that names no such key exactly as pino made it', () => {
    const line = `${JSON.stringify({ level: 30, time: 1, reqId: 'req-1', msg: 'quoted "token": in a message stays', tokenCount: 3 })}\n`;
    expect(redactLine(line)).toBe(line);
  });

  it('leaves no secret under any redacted key, at any depth, in any letter case', () => {
    const key = fc.constantFrom(...REDACTED_KEYS).chain((name) => fc.constantFrom(name, name.toUpperCase()));
    const tree = fc.letrec((tie) => ({
      node: fc.oneof(
        { depthSize: 'small' },
        fc.jsonValue({ maxDepth: 1 }),
        fc.array(tie('node'), { maxLength: 3 }),
        fc.dictionary(fc.string({ maxLength: 6 }), tie('node'), { maxKeys: 3 }),
        fc.tuple(key, tie('node')).map(([name, rest]) => ({ [name]: SECRET, rest })),
      ),
    })).node;
    fc.assert(
      fc.property(tree, (logged) => {
        const line = `${JSON.stringify({ level: 30, logged })}\n`;
        const written = redactLine(line);
        expect(written.endsWith('\n')).toBe(true);
        expect(JSON.parse(written)).toBeTypeOf('object');
        expect(written).not.toContain(SECRET);
      }),
    );
  });
});
