import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { ago, cli, FILE_URL, fromNow, insertDelivery, insertDocument, SECRET_PATH, spawnCli, TOKEN } from './helpers.js';

let database: TestDatabase;
let env: Record<string, string>;

beforeAll(async () => {
  database = await createTestDatabase();
  env = { DATABASE_URL: database.url };
});
afterAll(async () => {
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE physitrack_deliveries, documents, document_owners');
});

const ids = (stdout: string) => (JSON.parse(stdout) as { id: string }[]).map((r) => r.id);

async function rowOf(id: string) {
  const { rows } = await database.pool.query('SELECT *, now() AS now FROM physitrack_deliveries WHERE id = $1', [id]);
  return rows[0];
}

/** Nothing of the URL's path or query, and not the whole token, may appear anywhere in the output. */
function expectNoSecrets(output: string) {
  expect(output).not.toContain(SECRET_PATH);
  expect(output).not.toContain('secret-path');
  expect(output).not.toContain('X-Amz-Signature');
  expect(output).not.toContain(FILE_URL);
  expect(output).not.toContain(TOKEN);
  expect(output).not.toContain(TOKEN.slice(0, 8));
}

describe('cli deliveries list', () => {
  it('filters by --source and shows each delivery\'s source', async () => {
    const mine = await insertDelivery(database.pool, { source_id: 'clinicaaaaaaaaaaaaaa' });
    await insertDelivery(database.pool, { source_id: 'default' });
    expect(ids((await cli(['deliveries', 'list', '--source', 'clinicaaaaaaaaaaaaaa', '--json'], env)).stdout)).toEqual([mine]);
    expect((await cli(['deliveries', 'show', mine], env)).stdout).toMatch(/Source:\s+clinicaaaaaaaaaaaaaa/);
  });

  it('lists newest first and filters by --status, --patient and --since', async () => {
    const old = await insertDelivery(database.pool, { received_at: ago('5 hours'), download_status: 'failed' });
    const mid = await insertDelivery(database.pool, { received_at: ago('90 minutes'), patient_id: 'P-2' });
    const recent = await insertDelivery(database.pool, { received_at: ago('1 minute'), download_status: 'failed', patient_id: 'P-2' });

    expect(ids((await cli(['deliveries', 'list', '--json'], env)).stdout)).toEqual([recent, mid, old]);
    expect(ids((await cli(['deliveries', 'list', '--status', 'failed', '--json'], env)).stdout)).toEqual([recent, old]);
    expect(ids((await cli(['deliveries', 'list', '--patient', 'P-2', '--json'], env)).stdout)).toEqual([recent, mid]);
    expect(ids((await cli(['deliveries', 'list', '--since', '2h', '--json'], env)).stdout)).toEqual([recent, mid]);
    expect(ids((await cli(['deliveries', 'list', '--since', '30m', '--json'], env)).stdout)).toEqual([recent]);
    expect(ids((await cli(['deliveries', 'list', '--since', '2h', '--status', 'pending', '--json'], env)).stdout)).toEqual([mid]);
    expect(ids((await cli(['deliveries', 'list', '--limit', '1', '--json'], env)).stdout)).toEqual([recent]);
  });

  it('exits 1 when nothing matches, with [] for scripts', async () => {
    await insertDelivery(database.pool);
    const result = await cli(['deliveries', 'list', '--status', 'expired', '--json'], env);
    expect(result.code).toBe(1);
    expect(JSON.parse(result.stdout)).toEqual([]);
    const human = await cli(['deliveries', 'list', '--patient', 'nobody'], env);
    expect(human.code).toBe(1);
    expect(human.stderr).toMatch(/No deliveries match/);
  });

  it('shows only the host of file_url and no token, in the table and in JSON', async () => {
    await insertDelivery(database.pool, { last_error: 'The file host answered 404.' });
    const table = await cli(['deliveries', 'list'], env);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain('files.physitrack.com');
    expectNoSecrets(table.stdout);
    const json = await cli(['deliveries', 'list', '--json'], env);
    expect(JSON.parse(json.stdout)[0]).toMatchObject({ fileUrlHost: 'files.physitrack.com', lastError: 'The file host answered 404.' });
    expectNoSecrets(json.stdout);
  });

  it('refuses an unknown status, a bad duration or limit with exit 2', async () => {
    for (const args of [['--status', 'lost'], ['--since', '2 hours'], ['--since', '0h'], ['--limit', '0'], ['--limit', 'ten'], ['extra']]) {
      const result = await cli(['deliveries', 'list', ...args], env);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr).toMatch(/Usage: npm run cli -- deliveries list/);
    }
  });
});

describe('cli deliveries show', () => {
  it('shows attempts, errors, deadline and the document, but neither the URL path nor the token', async () => {
    const doc = await insertDocument(database.pool, { sha256: 'c'.repeat(64), size_bytes: 3, content: Buffer.from('pdf') });
    const id = await insertDelivery(database.pool, {
      download_status: 'done',
      attempts: 3,
      last_error: 'The file host answered 503.',
      last_http_status: 503,
      document_id: doc,
      downloaded_at: ago('1 minute'),
    });
    const result = await cli(['deliveries', 'show', id], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Attempts:\s+3/);
    expect(result.stdout).toMatch(/Last error:\s+The file host answered 503\./);
    expect(result.stdout).toMatch(/Last HTTP status:\s+503/);
    expect(result.stdout).toMatch(/Deadline:\s+\S+ \(23h 59m left\)/);
    expect(result.stdout).toContain(`${doc} (sha256 ${'c'.repeat(64)}, 3 bytes)`);
    expect(result.stdout).toMatch(/File URL:\s+files\.physitrack\.com \(file name of 22 characters\)/);
    expect(result.stdout).toMatch(/Practitioner token:\s+ptk_…\n/);
    expectNoSecrets(result.stdout);

    const json = await cli(['deliveries', 'show', id, '--json'], env);
    expect(JSON.parse(json.stdout)).toMatchObject({
      id,
      attempts: 3,
      lastHttpStatus: 503,
      practitionerToken: 'ptk_…',
      fileUrlHost: 'files.physitrack.com',
      fileNameLength: 22,
      documentId: doc,
      documentSha256: 'c'.repeat(64),
      documentSizeBytes: 3,
    });
    expectNoSecrets(json.stdout);
  });

  it('masks a short token completely', async () => {
    const id = await insertDelivery(database.pool, { practitioner_token: 'tok-12345' });
    const result = await cli(['deliveries', 'show', id, '--json'], env);
    expect(JSON.parse(result.stdout).practitionerToken).toBe('…');
    expect(result.stdout).not.toContain('tok-');
  });

  it('exits 1 for an unknown id and 2 for something that is not an id', async () => {
    expect((await cli(['deliveries', 'show', '999999'], env)).code).toBe(1);
    expect((await cli(['deliveries', 'show', 'abc'], env)).code).toBe(2);
    expect((await cli(['deliveries', 'show'], env)).code).toBe(2);
  });
});

describe('cli deliveries retry', () => {
  it('queues a failed delivery again: pending, due now, unlocked', async () => {
    const id = await insertDelivery(database.pool, {
      download_status: 'failed', attempts: 4, next_attempt_at: ago('1 hour'), locked_by: 'w1', locked_until: ago('59 minutes'),
    });
    const result = await cli(['deliveries', 'retry', id], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/pending again\. .*poll interval/);
    const row = await rowOf(id);
    expect(row).toMatchObject({ download_status: 'pending', locked_by: null, locked_until: null, attempts: 4 });
    expect(Math.abs(row.next_attempt_at.getTime() - row.now.getTime())).toBeLessThan(5000);
  });

  it('leaves done, downloading, pending and past-deadline rows alone, with exit 1', async () => {
    const cases = {
      done: await insertDelivery(database.pool, { download_status: 'done' }),
      downloading: await insertDelivery(database.pool, { download_status: 'downloading', locked_by: 'w1', locked_until: fromNow('1 minute') }),
      pending: await insertDelivery(database.pool, { next_attempt_at: fromNow('10 minutes') }),
      late: await insertDelivery(database.pool, { download_status: 'failed', deadline_at: ago('1 minute') }),
    };
    for (const [name, id] of Object.entries(cases)) {
      const before = await rowOf(id);
      const result = await cli(['deliveries', 'retry', id, '--json'], env);
      expect(result.code, name).toBe(1);
      expect(JSON.parse(result.stdout)).toMatchObject({ retried: [], skipped: { id } });
      expect({ ...(await rowOf(id)), now: null }).toEqual({ ...before, now: null });
    }
    expect((await cli(['deliveries', 'retry', cases.late], env)).stderr).toMatch(/deadline has passed/);
    expect((await cli(['deliveries', 'retry', '999999'], env)).stderr).toMatch(/not found/);
  });

  it('queues every failed delivery before its deadline, counts the ones past it, touches nothing else', async () => {
    const due = [
      await insertDelivery(database.pool, { download_status: 'failed' }),
      await insertDelivery(database.pool, { download_status: 'failed', deadline_at: fromNow('5 minutes') }),
    ];
    const late = await insertDelivery(database.pool, { download_status: 'failed', deadline_at: ago('1 minute') });
    const others = [
      await insertDelivery(database.pool, { download_status: 'done' }),
      await insertDelivery(database.pool, { download_status: 'expired' }),
      await insertDelivery(database.pool, { download_status: 'downloading', locked_by: 'w1' }),
    ];
    const before = await Promise.all([late, ...others].map(rowOf));

    const result = await cli(['deliveries', 'retry', '--status', 'failed', '--json'], env);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ retried: due, skippedPastDeadline: 1, skippedRefused: 0 });
    for (const id of due) expect((await rowOf(id)).download_status).toBe('pending');
    const after = await Promise.all([late, ...others].map(rowOf));
    expect(after.map((r) => ({ ...r, now: null }))).toEqual(before.map((r) => ({ ...r, now: null })));

    const again = await cli(['deliveries', 'retry', '--status', 'failed'], env);
    expect(again.code).toBe(1);
    expect(again.stdout).toMatch(/Queued 0 failed deliveries again\. Skipped 1 delivery past the deadline\./);
  });

  it('leaves a delivery whose file URL the download policy refuses alone, and says why', async () => {
    const refused = await insertDelivery(database.pool, { download_status: 'failed', file_url: 'http://files.physitrack.com/plain-http.pdf' });
    const elsewhere = await insertDelivery(database.pool, { download_status: 'failed', file_url: 'https://evil.example.com/p.pdf' });
    const fine = await insertDelivery(database.pool, { download_status: 'failed' });
    const one = await cli(['deliveries', 'retry', refused], env);
    expect(one.code).toBe(1);
    expect(one.stderr).toMatch(/was not queued: its file URL is refused by the download policy \(.*https.*\)/);
    expect((await rowOf(refused)).download_status).toBe('failed');

    const all = await cli(['deliveries', 'retry', '--status', 'failed', '--json'], env);
    expect(JSON.parse(all.stdout)).toMatchObject({ retried: [fine], skippedRefused: 2 });
    expect((await rowOf(elsewhere)).download_status).toBe('failed');
    const text = await cli(['deliveries', 'retry', '--status', 'failed'], env);
    expect(text.stdout).toMatch(/Left 2 deliveries alone whose file URL the download policy refuses/);
  });

  it('queues expired deliveries whose deadline is still ahead', async () => {
    const early = await insertDelivery(database.pool, { download_status: 'expired', deadline_at: fromNow('1 hour') });
    await insertDelivery(database.pool, { download_status: 'expired', deadline_at: ago('1 hour') });
    const result = await cli(['deliveries', 'retry', '--status', 'expired'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/Queued 1 expired delivery again\. Skipped 1 delivery past the deadline\. .*within its poll interval/);
    expect((await rowOf(early)).download_status).toBe('pending');
  });

  it('refuses other statuses and ambiguous arguments with exit 2', async () => {
    for (const args of [['--status', 'done'], ['--status', 'downloading'], ['--status', 'pending'], [], ['1', '--status', 'failed']]) {
      expect((await cli(['deliveries', 'retry', ...args], env)).code, args.join(' ')).toBe(2);
    }
  });
});

describe('cli deliveries as a real process', () => {
  it('lists as JSON with exit 0, and exits 1 for an unknown delivery', async () => {
    const id = await insertDelivery(database.pool, { download_status: 'failed' });
    const list = await spawnCli(['deliveries', 'list', '--status', 'failed', '--json'], env);
    expect(list.code).toBe(0);
    expect(ids(list.stdout)).toEqual([id]);
    expectNoSecrets(list.stdout);
    const missing = await spawnCli(['deliveries', 'show', '999999'], env);
    expect(missing.code).toBe(1);
    const retry = await spawnCli(['deliveries', 'retry', id, '--json'], env);
    expect(retry.code).toBe(0);
    expect(JSON.parse(retry.stdout)).toEqual({ retried: [id], skipped: null });
  });
});
