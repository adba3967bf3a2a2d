import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { commitAllAtOnce, expectLentSha256, createStorageTest, fakePdf, listFiles, metaOf, readAll, store, writeInChunks, type StorageTest } from './pdf-fixtures.js';

let t: StorageTest;

beforeAll(async () => {
  t = await createStorageTest('database');
});
afterAll(async () => {
  await t.close();
});
beforeEach(async () => {
  await t.database.pool.query('TRUNCATE documents CASCADE');
});

async function documentRows() {
  const { rows } = await t.database.pool.query('SELECT *, xmin::text AS version FROM documents ORDER BY id');
  return rows;
}

describe('database PDF storage', () => {
  it('stores a PDF in its documents row with its size and sha256', async () => {
    const bytes = fakePdf();
    const committed = await store(t.storage, bytes);
    expect(committed.deduplicated).toBe(false);
    const rows = await documentRows();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      id: String(committed.documentId),
      sha256: metaOf(bytes).sha256,
      size_bytes: String(bytes.length),
      content_type: 'application/pdf',
      storage: 'database',
      storage_key: null,
    });
    expect(Buffer.compare(rows[0].content, bytes)).toBe(0);
    expect(await listFiles(t.pdfDir)).toEqual([]);
  });

  it('stores the same bytes once and answers the second commit with the same row, untouched', async () => {
    const bytes = fakePdf();
    const first = await store(t.storage, bytes);
    const [before] = await documentRows();
    const second = await store(t.storage, bytes);
    expect(second).toEqual({ documentId: first.documentId, deduplicated: true });
    // Same xmin: the existing row was not updated, not even to itself.
    expect(await documentRows()).toEqual([before]);
  });

  it('records one row when five identical PDFs commit at once', async () => {
    const bytes = fakePdf();
    const pendings = await Promise.all(Array.from({ length: 5 }, () => t.storage.begin()));
    for (const pending of pendings) await writeInChunks(pending, bytes);
    const results = await commitAllAtOnce(t, pendings, metaOf(bytes));
    expect(new Set(results.map((r) => r.documentId)).size).toBe(1);
    expect(results.filter((r) => !r.deduplicated)).toHaveLength(1);
    expect(await documentRows()).toHaveLength(1);
  });

  it('keeps different PDFs apart', async () => {
    const [a, b] = await Promise.all([store(t.storage, fakePdf()), store(t.storage, fakePdf())]);
    expect(a.documentId).not.toBe(b.documentId);
    expect(await documentRows()).toHaveLength(2);
  });

  it('stores nothing when discarded, and refuses to be used afterwards', async () => {
    const bytes = fakePdf();
    const pending = await t.storage.begin();
    await writeInChunks(pending, bytes);
    await pending.discard();
    await pending.discard();
    await expect(pending.write(bytes)).rejects.toMatchObject({ code: 'STORAGE_ERR_FINISHED' });
    await expect(pending.commit(metaOf(bytes))).rejects.toMatchObject({ code: 'STORAGE_ERR_FINISHED' });
    expect(await documentRows()).toEqual([]);
  });

  it('lends the sha256 of what it was written, after which it takes no more bytes', async () => {
    await expectLentSha256(t.storage);
    expect(await documentRows()).toHaveLength(1);
  });

  it('refuses a commit whose sha256 is not that of the bytes written, storing nothing', async () => {
    const bytes = fakePdf();
    const wrong = { ...metaOf(bytes), sha256: metaOf(fakePdf()).sha256 };
    await expect(store(t.storage, bytes, wrong)).rejects.toMatchObject({ code: 'STORAGE_ERR_MISMATCH' });
    expect(await documentRows()).toEqual([]);
  });

  it('refuses a commit whose size is not that of the bytes written, storing nothing', async () => {
    const bytes = fakePdf();
    await expect(store(t.storage, bytes, { ...metaOf(bytes), sizeBytes: bytes.length - 1 })).rejects.toMatchObject({
      code: 'STORAGE_ERR_MISMATCH',
    });
    expect(await documentRows()).toEqual([]);
  });

  it('stores a PDF whose chunks arrive in odd sizes', async () => {
    const bytes = fakePdf(100_003);
    const pending = await t.storage.begin();
    await writeInChunks(pending, bytes, 7_777);
    const { documentId } = await pending.commit(metaOf(bytes));
    expect(await readAll((await t.storage.open(documentId))!.stream)).toEqual(bytes);
  });

  it('opens a stored document and streams back the exact bytes', async () => {
    const bytes = fakePdf(1_000_000);
    const { documentId } = await store(t.storage, bytes);
    const opened = await t.storage.open(documentId);
    expect(opened).toMatchObject({ ...metaOf(bytes) });
    expect(Buffer.compare(await readAll(opened!.stream), bytes)).toBe(0);
  });

  it('opens nothing for an unknown id', async () => {
    expect(await t.storage.open(123456789n)).toBeUndefined();
  });

  it('opens a document stored by the filesystem backend before the switch', async () => {
    const bytes = fakePdf();
    const { documentId } = await store(t.other, bytes);
    expect(Buffer.compare(await readAll((await t.storage.open(documentId))!.stream), bytes)).toBe(0);
  });
});
