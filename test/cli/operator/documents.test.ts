import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../../src/db/client.js';
import { createStorage } from '../../../src/storage/pdf-storage.js';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { fakePdf, metaOf, store } from '../../storage/pdf-fixtures.js';
import { cli, insertDelivery, insertDocument, spawnCli } from './helpers.js';

let database: TestDatabase;
let db: Database;
let tempDir: string;
let outDir: string;
let env: Record<string, string>;

beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 2000 });
  tempDir = await mkdtemp(path.join(os.tmpdir(), 'cli-documents-test-'));
  env = { DATABASE_URL: database.url, PDF_DIR: path.join(tempDir, 'pdf') };
});
afterAll(async () => {
  await db.$disconnect();
  await database.drop();
  await rm(tempDir, { recursive: true, force: true });
});
beforeEach(async () => {
  outDir = await mkdtemp(path.join(tempDir, 'out-'));
});

async function storeInDatabase(bytes: Buffer): Promise<string> {
  const { sha256, sizeBytes } = metaOf(bytes);
  return insertDocument(database.pool, { sha256, size_bytes: sizeBytes, content: bytes });
}

/** Flips one byte in the middle of the stored content. */
async function corrupt(id: string): Promise<void> {
  await database.pool.query('UPDATE documents SET content = set_byte(content, 100000, get_byte(content, 100000) # 1) WHERE id = $1', [id]);
}

describe('cli documents export (database storage)', () => {
  it('writes exactly the stored bytes to --out and leaves no temporary file', async () => {
    const bytes = fakePdf();
    const id = await storeInDatabase(bytes);
    const out = path.join(outDir, 'program.pdf');
    const result = await cli(['documents', 'export', id, '--out', out, '--json'], env);
    expect(result.code).toBe(0);
    expect(await readFile(out)).toEqual(bytes);
    expect(await readdir(outDir)).toEqual(['program.pdf']);
    expect(JSON.parse(result.stdout)).toEqual({
      documentId: id, sha256: metaOf(bytes).sha256, sizeBytes: bytes.length, contentType: 'application/pdf', out, ok: true,
    });
  });

  it('finds the document of a delivery', async () => {
    const bytes = fakePdf(5000);
    const doc = await storeInDatabase(bytes);
    const delivery = await insertDelivery(database.pool, { download_status: 'done', document_id: doc });
    const out = path.join(outDir, 'by-delivery.pdf');
    const result = await cli(['documents', 'export', '--delivery', delivery, '--out', out], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/verified\) to /);
    expect(await readFile(out)).toEqual(bytes);
  });

  it('writes to stdout when it is not a terminal, the summary going to stderr', async () => {
    const bytes = fakePdf();
    const id = await storeInDatabase(bytes);
    const result = await cli(['documents', 'export', id], env, { tty: false });
    expect(result.code).toBe(0);
    expect(result.bytes).toEqual(bytes);
    expect(result.stderr).toMatch(/Wrote document \d+ \(200000 bytes, sha256 [0-9a-f]{64} verified\)/);
  });

  it('refuses to write a PDF to a terminal with exit 2', async () => {
    const id = await storeInDatabase(fakePdf(1000));
    const result = await cli(['documents', 'export', id], env, { tty: true });
    expect(result.code).toBe(2);
    expect(result.bytes.length).toBe(0);
    expect(result.stderr).toMatch(/Refusing to write a PDF to a terminal/);
  });

  it('fails with exit 1 on a corrupted document and leaves no partial file', async () => {
    const id = await storeInDatabase(fakePdf());
    await corrupt(id);
    const out = path.join(outDir, 'corrupt.pdf');
    const result = await cli(['documents', 'export', id, '--out', out], env);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/failed verification: expected sha256 [0-9a-f]{64} \(200000 bytes\), read [0-9a-f]{64} \(200000 bytes\)\. Nothing was written/);
    expect(await readdir(outDir)).toEqual([]);
  });

  it('keeps an existing file when the new copy fails verification', async () => {
    const id = await storeInDatabase(fakePdf());
    await corrupt(id);
    const out = path.join(outDir, 'existing.pdf');
    await writeFile(out, 'the previous export');
    expect((await cli(['documents', 'export', id, '--out', out], env)).code).toBe(1);
    expect(await readFile(out, 'utf8')).toBe('the previous export');
    expect(await readdir(outDir)).toEqual(['existing.pdf']);
  });

  it('never writes a corrupted document to stdout complete', async () => {
    const bytes = fakePdf();
    const id = await storeInDatabase(bytes);
    await corrupt(id);
    const result = await cli(['documents', 'export', id], env, { tty: false });
    expect(result.code).toBe(1);
    expect(result.bytes.length).toBeLessThan(bytes.length);
    expect(result.stderr).toMatch(/The output is incomplete/);
  });

  it('exits 1 for an unknown document, an unknown delivery, or a delivery without a document', async () => {
    const pending = await insertDelivery(database.pool);
    const out = path.join(outDir, 'none.pdf');
    expect((await cli(['documents', 'export', '999999', '--out', out], env)).code).toBe(1);
    expect((await cli(['documents', 'export', '--delivery', '999999', '--out', out], env)).code).toBe(1);
    const result = await cli(['documents', 'export', '--delivery', pending, '--out', out], env);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/has no document \(its download is pending\)/);
    expect(await readdir(outDir)).toEqual([]);
  });

  it('refuses missing or ambiguous arguments with exit 2', async () => {
    for (const args of [[], ['1', '--delivery', '2'], ['x'], ['1', '2'], ['1', '--out', '']]) {
      expect((await cli(['documents', 'export', ...args], env)).code, args.join(' ')).toBe(2);
    }
  });
});

describe('cli documents export (filesystem storage)', () => {
  const fsEnv = () => ({ ...env, PDF_STORAGE: 'filesystem' });

  it('writes exactly the bytes the filesystem backend stored', async () => {
    const bytes = fakePdf();
    const { documentId } = await store(createStorage({ kind: 'filesystem', pdfDir: env.PDF_DIR! }, db), bytes);
    const out = path.join(outDir, 'fs.pdf');
    const result = await cli(['documents', 'export', String(documentId), '--out', out], fsEnv());
    expect(result.code).toBe(0);
    expect(await readFile(out)).toEqual(bytes);
  });

  it('fails with exit 1 when the file was damaged or removed, leaving nothing behind', async () => {
    const bytes = fakePdf();
    const { sha256 } = metaOf(bytes);
    const { documentId } = await store(createStorage({ kind: 'filesystem', pdfDir: env.PDF_DIR! }, db), bytes);
    const file = path.join(env.PDF_DIR!, sha256.slice(0, 2), `${sha256}.pdf`);
    const damaged = Buffer.from(bytes);
    damaged[150_000]! ^= 0xff;
    await writeFile(file, damaged);
    const out = path.join(outDir, 'damaged.pdf');
    expect((await cli(['documents', 'export', String(documentId), '--out', out], fsEnv())).code).toBe(1);
    expect(await readdir(outDir)).toEqual([]);

    await rm(file);
    const missing = await cli(['documents', 'export', String(documentId), '--out', out], fsEnv());
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot be read: The stored PDF .* is missing/);
    expect(await readdir(outDir)).toEqual([]);
  });
});

describe('cli documents export as a real process', () => {
  it('writes the PDF to a pipe and to --out, exit 0', async () => {
    const bytes = fakePdf();
    const id = await storeInDatabase(bytes);
    const piped = await spawnCli(['documents', 'export', id], env);
    expect(piped.code).toBe(0);
    expect(piped.bytes).toEqual(bytes);
    const out = path.join(outDir, 'child.pdf');
    const written = await spawnCli(['documents', 'export', id, '--out', out, '--json'], env);
    expect(written.code).toBe(0);
    expect(JSON.parse(written.stdout)).toMatchObject({ documentId: id, ok: true });
    expect(await readFile(out)).toEqual(bytes);
  });
});
