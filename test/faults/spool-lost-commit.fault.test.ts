import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { noticeKeyOf } from '../../src/downloads/intake.js';
import { patiroEvent } from '../helpers/patiro.js';
import { waitForDeliveries } from './deliveries.js';
import { sendPatiro, sendPhysitrack, summarise, type Outcome } from './senders.js';
import { checkStoredOnce, countersMatchReceipts, pdfUrls, startFaultRig, waitReplayed, type FaultRig } from './spool-helpers.js';
import type { LostAnswer } from './tcp-proxy.js';

// A COMMIT whose answer is lost: PostgreSQL committed a batch, and the connection broke before the
// service heard so (the proxy drops that one answer and cuts the connection). The service cannot
// know; it writes the batch again (the group committer retries it in halves) or spools it and
// replays it. Either way the receipts make the second write a no-op: the sender gets 204 and each
// delivery is counted once, with one audit row.

let rig: FaultRig;

beforeAll(async () => {
  rig = await startFaultRig({ spool: 'lost-commit' });
});
afterAll(() => rig?.close());

/** PostgreSQL's ReadyForQuery, idle: sent only after the transaction has committed. */
const READY_IDLE = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]);

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_resolve, reject) => setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms))]);
}

/**
 * Sends while `table` is locked against writes for `ms`: the first deliveries' batches wait on the
 * lock, and every later one queues in the group committer, to be written as one batch after.
 */
async function whileLocked<T>(table: string, ms: number, send: () => Promise<T>): Promise<T> {
  const lock = await rig.database.pool.connect();
  try {
    await lock.query(`BEGIN; LOCK TABLE ${table} IN EXCLUSIVE MODE`);
    const sent = send();
    await new Promise((resolve) => setTimeout(resolve, ms));
    await lock.query('COMMIT');
    return await sent;
  } finally {
    lock.release();
  }
}

/**
 * What the service logged for the deliveries `which` picks (one line per request), by message,
 * once `expected` lines are there: a line is written after its answer, so it may still be in the pipe.
 */
async function loggedOutcomes(which: (entry: Record<string, unknown>) => boolean, expected: number): Promise<Record<string, number>> {
  const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
  const deadline = Date.now() + 5000;
  let counts = countLogged(which);
  while (total(counts) < expected && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    counts = countLogged(which);
  }
  return counts;
}

function countLogged(which: (entry: Record<string, unknown>) => boolean): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const entry of rig.service.logEntries()) {
    if (!which(entry)) continue;
    const key = `${String(entry.msg)}${entry.redelivery === true ? ' (redelivery)' : ''}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

describe('a COMMIT whose answer is lost', () => {
  it('a Patiro batch: answered 204, each delivery counted once', async () => {
    const { database, proxy, client, service } = rig;
    // Warm: the statement is prepared and the pool has connections.
    await Promise.all(Array.from({ length: 8 }, () => sendPatiro(client, service.baseUrl)));

    // 30 at once: the first ones start batches of their own (held by a lock), the rest queue and are
    // written together. The answer lost is the one carrying the last event (its RowDescription
    // names `eventId`, its DataRow the event): a batch of many.
    const events = Array.from({ length: 30 }, () => patiroEvent());
    const target = String(events.at(-1)!.eventId);
    const lost: Promise<LostAnswer> = proxy.loseAnswer({ pattern: ['eventId', target] });
    const outcomes: Outcome[] = await whileLocked('patiro_events', 300, () => Promise.all(events.map((event) => sendPatiro(client, service.baseUrl, { event }))));
    const fault = await within(lost, 5000, 'the answer to lose was not seen');
    await waitReplayed(service.baseUrl);

    const ids = events.map((e) => String(e.eventId));
    const { rows } = await database.pool.query<{ event_id: string; xmin: string }>('SELECT event_id, xmin::text FROM patiro_events WHERE event_id = ANY($1)', [ids]);
    const targetXmin = rows.find((r) => r.event_id === target)?.xmin;
    const lostBatch = rows.filter((r) => r.xmin === targetXmin).map((r) => r.event_id);
    const inLostBatch = new Set(lostBatch);
    const logged = await loggedOutcomes((e) => inLostBatch.has(String(e.eventId)), lostBatch.length);
    console.log(
      `[lost COMMIT answer, patiro] answers ${JSON.stringify(summarise(outcomes))}, max ${Math.max(...outcomes.map((o) => o.latencyMs))} ms; ` +
        `the lost answer (${fault.chunk.length} bytes, ReadyForQuery included: ${fault.chunk.includes(READY_IDLE)}) was for a batch of ${lostBatch.length}; ` +
        `the service then logged for that batch ${JSON.stringify(logged)}`,
    );

    expect(fault.chunk.includes(READY_IDLE)).toBe(true); // the server had committed when it answered
    expect(summarise(outcomes)).toEqual({ 204: 30 });
    expect((await checkStoredOnce(database.pool, outcomes)).problems).toEqual([]);
    // The batch was written again (in halves) and found every receipt recorded: each was logged as a redelivery.
    expect(lostBatch.length).toBeGreaterThanOrEqual(2);
    expect(logged).toEqual({ 'patiro event stored (redelivery)': lostBatch.length });
    const counters = await countersMatchReceipts(database.pool);
    expect(counters.patiro[0]).toBe(counters.patiro[1]);
  });

  it('a single Patiro delivery: spooled, and its replay counts nothing', async () => {
    const { database, proxy, client, service } = rig;
    // Alone, it is a batch of one: the committer has nothing to split, the durable write spools it,
    // and the replay (PostgreSQL answers at once) finds its receipt.
    const event = patiroEvent();
    const lost = proxy.loseAnswer({ pattern: ['eventId', String(event.eventId)] });
    const outcome = await sendPatiro(client, service.baseUrl, { event });
    const fault = await within(lost, 5000, 'the answer to lose was not seen');
    await waitReplayed(service.baseUrl);
    const logged = await loggedOutcomes((e) => e.eventId === event.eventId, 1);
    console.log(`[lost COMMIT answer, one patiro delivery] answered ${outcome.status} in ${outcome.latencyMs} ms; the service logged ${JSON.stringify(logged)}`);

    expect(fault.chunk.includes(READY_IDLE)).toBe(true);
    expect(outcome.status).toBe(204);
    expect(logged).toEqual({ 'patiro event spooled (PostgreSQL is away)': 1 });
    expect((await checkStoredOnce(database.pool, [outcome])).problems).toEqual([]);
  });

  it('a Physitrack batch (its transaction\'s COMMIT): answered 204, each notice counted once, and downloaded', async () => {
    const { database, proxy, host, client, service } = rig;
    const nextPdf = pdfUrls(host, 'lost-commit');
    await Promise.all(Array.from({ length: 8 }, () => sendPhysitrack(client, service.baseUrl, nextPdf())));

    // The intake runs BEGIN; statement; COMMIT. The COMMIT answer lost is the one on the connection
    // that has just carried the last notice's row (its notice key, sha256 of its file URL): with
    // the table locked for a moment, a batch of many.
    const urls = Array.from({ length: 30 }, () => nextPdf());
    const lost = proxy.loseAnswer({ after: noticeKeyOf(urls.at(-1)!), pattern: Buffer.from('COMMIT\0') });
    const outcomes = await whileLocked('physitrack_deliveries', 300, () => Promise.all(urls.map((url) => sendPhysitrack(client, service.baseUrl, url))));
    const fault = await within(lost, 5000, 'the answer to lose was not seen');
    await waitReplayed(service.baseUrl);
    const answeredAt = Date.now();
    const rows = await waitForDeliveries(database.pool, (all) => all.filter((r) => urls.includes(r.file_url) && r.download_status === 'done').length === urls.length, 20_000);

    const mine = rows.filter((r) => urls.includes(r.file_url));
    const { rows: xmins } = await database.pool.query<{ xmin: string; n: number }>(
      'SELECT xmin::text, count(*)::int AS n FROM webhook_audit WHERE vendor = $1 AND event_id = ANY($2) GROUP BY 1 ORDER BY 2 DESC',
      ['physitrack', mine.map((r) => r.id)],
    );
    // The deliveries of this burst: a notice the retry found recorded has no delivery id to log.
    const ids = new Set(mine.map((r) => r.id));
    const logged = await loggedOutcomes((e) => e.vendor === 'physitrack' && typeof e.msg === 'string' && (e.deliveryId === null || ids.has(String(e.deliveryId))), urls.length);
    const again = logged['physitrack notice received again (redelivery)'] ?? 0;
    console.log(
      `[lost COMMIT answer, physitrack] answers ${JSON.stringify(summarise(outcomes))}, max ${Math.max(...outcomes.map((o) => o.latencyMs))} ms; ` +
        `the lost answer ${JSON.stringify(fault.chunk.toString('latin1'))}; batches (audit rows per transaction) ${JSON.stringify(xmins.map((x) => x.n))}; ` +
        `the service logged ${JSON.stringify(logged)}; all downloaded ${Date.now() - answeredAt} ms after the answers`,
    );

    expect(fault.chunk.includes(READY_IDLE)).toBe(true);
    expect(summarise(outcomes)).toEqual({ 204: 30 });
    expect((await checkStoredOnce(database.pool, outcomes)).problems).toEqual([]);
    expect(mine.map((r) => r.download_status)).toEqual(mine.map(() => 'done'));
    // The lost batch was written again in halves and found its receipts: as many notices as that
    // one transaction wrote, each logged as received before.
    expect(Object.values(logged).reduce((a, b) => a + b, 0)).toBe(30);
    expect(again).toBeGreaterThanOrEqual(2);
    expect(xmins.map((x) => x.n)).toContain(again);
    const counters = await countersMatchReceipts(database.pool);
    expect(counters.physitrack[0]).toBe(counters.physitrack[1]);
  });
});
