import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../src/audit.js';
import { createAvailability } from '../../src/db/availability.js';
import { OverloadedError } from '../../src/db/group-commit.js';
import { createDurableWrite } from '../../src/spool/durable-write.js';
import { openJournal } from '../../src/spool/journal.js';
import type { SpooledDelivery } from '../../src/spool/records.js';
import { toPatiroEvent } from '../../src/webhooks/patiro-payload.js';
import { captureLogs } from '../helpers/logs.js';

// Which failures of the database write send a delivery to the spool, and which of them say that
// PostgreSQL is away (from then on every delivery goes to the spool until a probe answers).

const dirs: string[] = [];
const stops: (() => void)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) stop();
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function setUp() {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wr-durable-'));
  dirs.push(dir);
  const journal = await openJournal({ dir, maxBytes: 1 << 30 });
  const availability = createAvailability({ probe: async () => undefined, initiallyUp: true });
  stops.push(() => availability.stop());
  const durable = createDurableWrite({ journal, availability, ackDeadlineMs: 1500, log: captureLogs().logger });
  return { journal, availability, durable };
}

const spooled = (): SpooledDelivery => ({
  vendor: 'patiro',
  delivery: { receipt: newReceipt(), sourceId: 'default', event: toPatiroEvent({ eventId: 'e', eventType: 'X' }), signedAt: new Date(), bodySha256: 'a'.repeat(64), sourceAddress: null },
});

const databaseError = (code: string) => Object.assign(new pg.DatabaseError('refused', 0, 'error'), { code });

describe('the durable write', () => {
  it('spools a delivery whose budget was spent before the database was asked (a slow upload), and says nothing of the database', async () => {
    const { journal, availability, durable } = await setUp();
    let asked = false;
    const outcome = await durable.write(spooled(), async () => (asked = true), Date.now() + 100);
    expect(outcome).toEqual({ spooled: true });
    expect(asked).toBe(false);
    expect(availability.up).toBe(true);
    expect(journal.stats().records).toBe(1);
  });

  it.each([
    ['a refused connection', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })],
    ["the pool's connect timeout", new Error('timeout exceeded when trying to connect')],
    ['a statement timeout', databaseError('57014')],
    ['a disk full', databaseError('53100')],
    ['a PostgreSQL shutting down', databaseError('57P01')],
  ])('spools and calls PostgreSQL away after %s', async (_label, error) => {
    const { availability, durable } = await setUp();
    expect(await durable.write(spooled(), async () => Promise.reject(error), Date.now() + 1500)).toEqual({ spooled: true });
    expect(availability.up).toBe(false);
  });

  it('spools a delivery the write queue cannot take (a burst), without calling PostgreSQL away', async () => {
    const { availability, durable } = await setUp();
    expect(await durable.write(spooled(), async () => Promise.reject(new OverloadedError()), Date.now() + 1500)).toEqual({ spooled: true });
    expect(availability.up).toBe(true);
  });

  it.each([
    ['its data (22P05)', databaseError('22P05')],
    ['an index entry too large (54000)', databaseError('54000')],
    ['a bug of ours', new TypeError('x is undefined')],
  ])('answers 503, never spooling and never calling PostgreSQL away, for a delivery refused for %s', async (_label, error) => {
    const { journal, availability, durable } = await setUp();
    await expect(durable.write(spooled(), async () => Promise.reject(error), Date.now() + 1500)).rejects.toBe(error);
    expect(availability.up).toBe(true);
    expect(journal.stats().records).toBe(0);
  });
});
