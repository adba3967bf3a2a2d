import { cp, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { isAcknowledged, sendPatiro, sendPhysitrack, summarise, type Outcome } from './senders.js';
import { runCliProcess, startServiceProcess, type CliRun } from './service-process.js';
import { checkStoredOnce, countersMatchReceipts, journalRecords, makeSpoolDir, pdfUrls, startFaultRig, type FaultRig } from './spool-helpers.js';

// One process per SPOOL_DIR: a second service on a directory a live one holds refuses to start, and
// so does `spool replay --dir`. The spool of a replica that is gone (kill -9, its volume mounted
// elsewhere) is drained by `spool replay --dir` into the database exactly once: running it again,
// or on a second copy of the same spool, changes nothing.

let rig: FaultRig;
const dirs: string[] = [];

// The rig's service is the first process on its spool directory; the test starts a second one.
beforeAll(async () => {
  rig = await startFaultRig({ spool: 'owner', tableSources: true, env: { SOURCES_SECRET_KEY: TEST_SOURCES_KEY } });
});
afterAll(async () => {
  await rig?.close();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function spoolDir(label: string): Promise<string> {
  const dir = await makeSpoolDir(label);
  dirs.push(dir);
  return dir;
}

/** `spool replay --dir` as the operator runs it, against the database directly. */
const replay = (dir: string): Promise<CliRun> => runCliProcess(['spool', 'replay', '--dir', dir, '--json'], { NODE_ENV: 'production', DATABASE_URL: rig.database.url });
const replayed = (run: CliRun) => JSON.parse(run.stdout) as { waiting: number; replayed: number; rejected: number; left: number; complete: boolean };

async function tableCounts(): Promise<Record<string, number>> {
  const { rows } = await rig.database.pool.query(
    `SELECT (SELECT count(*) FROM patiro_events)::int AS events, (SELECT COALESCE(sum(delivery_count), 0) FROM patiro_events)::int AS "deliveryCount",
            (SELECT count(*) FROM physitrack_deliveries)::int AS deliveries, (SELECT COALESCE(sum(notice_count), 0) FROM physitrack_deliveries)::int AS "noticeCount",
            (SELECT count(*) FROM webhook_audit WHERE receipt_id IS NOT NULL)::int AS receipts`,
  );
  return rows[0];
}

describe('one process per spool directory, and spool replay --dir', () => {
  it('refuses a second process on a held spool, and drains a copy of a killed replica\'s spool exactly once', async () => {
    const { database, proxy, host, client, service: first, spoolDir: dir, sources } = rig;

    // PostgreSQL away: deliveries of both vendors and both sources go to the spool.
    proxy.cut({ newConnections: 'refuse' });
    const nextPdf = pdfUrls(host, 'owner');
    const outcomes: Outcome[] = [];
    for (let round = 0; round < 10; round++) {
      outcomes.push(
        ...(await Promise.all([
          sendPatiro(client, first.baseUrl),
          sendPatiro(client, first.baseUrl, { sourceId: sources.patiro.id, secret: sources.patiro.secret }),
          sendPhysitrack(client, first.baseUrl, nextPdf()),
          sendPhysitrack(client, first.baseUrl, nextPdf(), { sourceId: sources.physitrack.id, apiKey: sources.physitrack.apiKey }),
        ])),
      );
    }
    expect(summarise(outcomes)).toEqual({ 204: 40 });

    // A second service on the same directory: exit 1, saying why.
    const second = await startServiceProcess({ databaseUrl: proxy.urlFor(database.url), env: { SPOOL_DIR: dir, SOURCES_SECRET_KEY: TEST_SOURCES_KEY } });
    const secondExit = await Promise.race([second.exited, new Promise<undefined>((resolve) => setTimeout(resolve, 20_000))]);
    const secondOutput = second.output();
    await second.kill9();
    expect(secondExit?.code, secondOutput).toBe(1);
    expect(secondOutput).toContain(`SPOOL_DIR ${dir} is in use`);
    // And the operator's replay, while the first one lives.
    const refused = await replay(dir);
    const afterRefusal = await tableCounts();
    expect({ code: refused.code, inUse: refused.stderr.includes('is in use') }).toEqual({ code: 2, inUse: true });
    expect(afterRefusal).toEqual({ events: 0, deliveryCount: 0, deliveries: 0, noticeCount: 0, receipts: 0 });

    await first.kill9();
    const records = await journalRecords(dir);
    const owner = JSON.parse(await readFile(path.join(dir, 'owner.json'), 'utf8')) as { pid: number };
    // The dead replica's volume, mounted elsewhere twice (say, by two operators).
    const copyA = await spoolDir('copy-a');
    const copyB = await spoolDir('copy-b');
    await cp(dir, copyA, { recursive: true });
    await cp(dir, copyB, { recursive: true });
    // (In production the CLI wants DATABASE_URL even for `spool status`, which never connects.)
    const status = await runCliProcess(['spool', 'status', '--dir', copyA, '--json'], { NODE_ENV: 'production', DATABASE_URL: database.url });

    const runA = await replay(copyA);
    const afterA = await tableCounts();
    const checkA = await checkStoredOnce(database.pool, outcomes.filter(isAcknowledged));
    const runAAgain = await replay(copyA);
    const afterAAgain = await tableCounts();
    const runB = await replay(copyB);
    const afterB = await tableCounts();

    console.log(
      `[spool owner + replay --dir] second process: exit ${secondExit?.code ?? 'none within 20 s'}; replay of a live spool: exit ${refused.code} (${refused.stderr.trim().split('\n')[0]}); ` +
        `dead owner pid ${owner.pid}; spool status of the copy: ${status.code === 0 ? (JSON.parse(status.stdout) as { records: number }).records : 'failed'} records; ` +
        `replay A ${runA.stdout.replace(/\s+/g, ' ')}, A again ${runAAgain.stdout.replace(/\s+/g, ' ')}, B (same records) ${runB.stdout.replace(/\s+/g, ' ')}; tables ${JSON.stringify(afterB)}`,
    );

    expect(first.isRunning()).toBe(false);
    expect(records).toHaveLength(40);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ records: 40, owner: { pid: owner.pid } });

    expect(runA.code, runA.stderr).toBe(0);
    expect(replayed(runA)).toMatchObject({ waiting: 40, replayed: 40, rejected: 0, left: 0, complete: true });
    expect(checkA.problems).toEqual([]);
    expect(afterA).toEqual({ events: 20, deliveryCount: 20, deliveries: 20, noticeCount: 20, receipts: 40 });
    expect(runAAgain.code, runAAgain.stderr).toBe(0);
    expect(replayed(runAAgain)).toMatchObject({ waiting: 0, left: 0, complete: true });
    expect(afterAAgain).toEqual(afterA);
    // The same records again, from the second copy: written through the same statements, counted nothing.
    expect(runB.code, runB.stderr).toBe(0);
    expect(replayed(runB)).toMatchObject({ waiting: 40, rejected: 0, left: 0, complete: true });
    expect(afterB).toEqual(afterA);
    const counters = await countersMatchReceipts(database.pool);
    expect(counters).toEqual({ patiro: [20, 20], physitrack: [20, 20] });
  });
});
