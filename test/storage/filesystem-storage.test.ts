import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { INCOMING_DIR, storageKeyFor, writeAll } from '../../src/storage/filesystem-storage.js';
import { commitAllAtOnce, expectLentSha256, createStorageTest, fakePdf, listFiles, metaOf, readAll, store, writeInChunks, type StorageTest } from './pdf-fixtures.js';

let t: StorageTest;

beforeAll(async () => {
  t = await createStorageTest('filesystem');
});
afterAll(async () => {
  await t.close();
});
beforeEach(async () => {
  await t.database.pool.query('TRUNCATE documents CASCADE');
  await rm(t.pdfDir, { recursive: true, force: true });
});
afterEach(async () => {
  // Whatever a test did, succeeded or refused, no download in progress may be left behind.
  expect(await listFiles(path.join(t.pdfDir, INCOMING_DIR))).toEqual([]);
});

async function documentRows() {
  const { rows } = await t.database.pool.query('SELECT *, xmin::text AS version FROM documents ORDER BY id');
  return rows;
}

const storedPath = (bytes: Buffer) => path.join(t.pdfDir, storageKeyFor(metaOf(bytes).sha256));

describe('filesystem PDF storage', () => {
  it('stores a PDF as a file named by its sha256 and a documents row without content', async () => {
    const bytes = fakePdf();
    const { sha256 } = metaOf(bytes);
    const committed = await store(t.storage, bytes);
    expect(committed.deduplicated).toBe(false);
    const rows = await documentRows();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      id: String(committed.documentId),
      sha256,
      size_bytes: String(bytes.length),
      content_type: 'application/pdf',
      storage: 'filesystem',
      storage_key: `${sha256.slice(0, 2)}/${sha256}.pdf`,
      content: null,
    });
    expect(await listFiles(t.pdfDir)).toEqual([rows[0].storage_key]);
    expect(await readFile(path.join(t.pdfDir, rows[0].storage_key))).toEqual(bytes);
  });

  it('keeps the files and their directories out of reach of other users', async () => {
    const bytes = fakePdf();
    await store(t.storage, bytes);
    expect((await stat(storedPath(bytes))).mode & 0o137).toBe(0);
    expect((await stat(path.dirname(storedPath(bytes)))).mode & 0o027).toBe(0);
    expect((await stat(t.pdfDir)).mode & 0o027).toBe(0);
  });

  it('stores the same bytes once and leaves the first file and row untouched', async () => {
    const bytes = fakePdf();
    const first = await store(t.storage, bytes);
    const [rowBefore] = await documentRows();
    const fileBefore = await stat(storedPath(bytes));
    const second = await store(t.storage, bytes);
    expect(second).toEqual({ documentId: first.documentId, deduplicated: true });
    expect(await documentRows()).toEqual([rowBefore]);
    expect((await stat(storedPath(bytes))).ino).toBe(fileBefore.ino);
    expect(await listFiles(t.pdfDir)).toEqual([storageKeyFor(metaOf(bytes).sha256)]);
  });

  it('records one row and one file when five identical PDFs commit at once', async () => {
    const bytes = fakePdf();
    const pendings = await Promise.all(Array.from({ length: 5 }, () => t.storage.begin()));
    for (const pending of pendings) await writeInChunks(pending, bytes);
    const results = await commitAllAtOnce(t, pendings, metaOf(bytes));
    expect(new Set(results.map((r) => r.documentId)).size).toBe(1);
    expect(results.filter((r) => !r.deduplicated)).toHaveLength(1);
    expect(await documentRows()).toHaveLength(1);
    expect(await listFiles(t.pdfDir)).toEqual([storageKeyFor(metaOf(bytes).sha256)]);
    expect(await readFile(storedPath(bytes))).toEqual(bytes);
  });

  it('writes a download to a temp file as it arrives (holding at most 256 KiB), which discard removes, storing nothing', async () => {
    const bytes = fakePdf(3_000_000);
    const pending = await t.storage.begin();
    await writeInChunks(pending, bytes);
    const incoming = await listFiles(path.join(t.pdfDir, INCOMING_DIR));
    expect(incoming).toHaveLength(1);
    const onDisk = await readFile(path.join(t.pdfDir, INCOMING_DIR, incoming[0]!));
    expect(onDisk.length).toBeGreaterThan(bytes.length - 256 * 1024);
    // Buffer.compare: toEqual walks 3 MB element by element, for seconds on a busy machine.
    expect(Buffer.compare(onDisk, bytes.subarray(0, onDisk.length))).toBe(0);
    await pending.discard();
    await pending.discard();
    await expect(pending.write(bytes)).rejects.toMatchObject({ code: 'STORAGE_ERR_FINISHED' });
    await expect(pending.commit(metaOf(bytes))).rejects.toMatchObject({ code: 'STORAGE_ERR_FINISHED' });
    expect(await listFiles(t.pdfDir)).toEqual([]);
    expect(await documentRows()).toEqual([]);
  });

  it('gives concurrent downloads their own temp files', async () => {
    const pendings = await Promise.all(Array.from({ length: 5 }, () => t.storage.begin()));
    expect(await listFiles(path.join(t.pdfDir, INCOMING_DIR))).toHaveLength(5);
    await Promise.all(pendings.map((p) => p.discard()));
  });

  it('lends the sha256 of what it was written, after which it takes no more bytes', async () => {
    await expectLentSha256(t.storage);
    expect(await documentRows()).toHaveLength(1);
  });

  it('refuses a commit whose sha256 is not that of the bytes written, keeping nothing', async () => {
    const bytes = fakePdf();
    const wrong = { ...metaOf(bytes), sha256: metaOf(fakePdf()).sha256 };
    await expect(store(t.storage, bytes, wrong)).rejects.toMatchObject({ code: 'STORAGE_ERR_MISMATCH' });
    expect(await listFiles(t.pdfDir)).toEqual([]);
    expect(await documentRows()).toEqual([]);
  });

  it('refuses a commit whose size is not that of the bytes written, keeping nothing', async () => {
    const bytes = fakePdf();
    const wrong = { ...metaOf(bytes), sizeBytes: bytes.length + 1 };
    await expect(store(t.storage, bytes, wrong)).rejects.toMatchObject({ code: 'STORAGE_ERR_MISMATCH' });
    expect(await listFiles(t.pdfDir)).toEqual([]);
    expect(await documentRows()).toEqual([]);
  });

  it('replaces a damaged file at the content address with the right bytes', async () => {
    const bytes = fakePdf();
    await store(t.storage, bytes);
    await writeFile(storedPath(bytes), bytes.subarray(0, 1000));
    const again = await store(t.storage, bytes);
    expect(again.deduplicated).toBe(true);
    expect(await readFile(storedPath(bytes))).toEqual(bytes);
  });

  it('opens a stored document and streams back the exact bytes', async () => {
    const bytes = fakePdf(3_000_000);
    const { documentId } = await store(t.storage, bytes);
    const opened = await t.storage.open(documentId);
    expect(opened).toMatchObject({ ...metaOf(bytes) });
    expect(Buffer.compare(await readAll(opened!.stream), bytes)).toBe(0);
  });

  it('opens nothing for an unknown id', async () => {
    expect(await t.storage.open(123456789n)).toBeUndefined();
  });

  it('says so when a stored file has gone missing', async () => {
    const bytes = fakePdf();
    const { documentId } = await store(t.storage, bytes);
    await rm(storedPath(bytes));
    await expect(t.storage.open(documentId)).rejects.toMatchObject({ code: 'STORAGE_ERR_MISSING' });
  });

  it('refuses to open a row whose storage key points outside the PDF directory', async () => {
    const { documentId } = await store(t.storage, fakePdf());
    await t.database.pool.query("UPDATE documents SET storage_key = '../../etc/passwd'");
    await expect(t.storage.open(documentId)).rejects.toMatchObject({ code: 'STORAGE_ERR_MISSING' });
  });

  it('opens a document stored in the database before the switch', async () => {
    const bytes = fakePdf();
    const { documentId } = await store(t.other, bytes);
    expect(await readAll((await t.storage.open(documentId))!.stream)).toEqual(bytes);
  });
});

describe('writeAll', () => {
  it('goes on writing where a short write stopped, until every byte is written', async () => {
    const written: Buffer[] = [];
    // A file that takes at most 5 bytes per call, as a nearly full disk or a signal can cause.
    const stingy = {
      async writev(chunks: Uint8Array[]) {
        const some = Buffer.concat(chunks).subarray(0, 5);
        written.push(some);
        return { bytesWritten: some.length };
      },
    };
    await writeAll(stingy, [Buffer.from('%PDF-'), Buffer.from('1.7 and'), Buffer.from(' more')]);
    expect(Buffer.concat(written).toString()).toBe('%PDF-1.7 and more');
    expect(written.length).toBe(4);
  });
});

