import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import { cpuBetween, cpuSnapshot, type CpuUse } from './cpu.js';

// The database's own limit for PDF bytes, beside the PDF pipeline with PDF_STORAGE=database: the
// same number of PDFs of the same size, each INSERTed as one row in its own transaction by plain
// node-postgres, at the service's DOWNLOAD_CONCURRENCY. No HTTP, no worker, no queue: what is left
// is PostgreSQL taking the bytes (TOAST, WAL, commit) and the driver sending them.

/**
 * The service's `documents` table as prisma/migrations creates it (content stored EXTERNAL: PDFs
 * do not compress, so PostgreSQL is told not to try). Kept as a copy on purpose: this measures
 * the database, whatever the service's schema becomes.
 */
const DOCUMENTS_TABLE = [
  `CREATE TABLE documents (
    id BIGSERIAL NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    storage TEXT NOT NULL,
    storage_key TEXT,
    content BYTEA,
    created_at TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT documents_pkey PRIMARY KEY (id),
    CONSTRAINT documents_storage_check CHECK (storage IN ('database', 'filesystem'))
  )`,
  'CREATE UNIQUE INDEX documents_sha256_key ON documents (sha256)',
  'ALTER TABLE documents ALTER COLUMN content SET STORAGE EXTERNAL',
];

/** The columns the service's storage writes for a PDF kept in the database. */
const INSERT_DOCUMENT = 'INSERT INTO documents (sha256, size_bytes, content_type, storage, storage_key, content) VALUES ($1, $2, $3, $4, $5, $6)';

export interface ByteaLimitResult {
  files: number;
  /** Rows in the table afterwards: every INSERT must have left one. */
  stored: number;
  bytes: number;
  elapsedS: number;
  concurrency: number;
  /** `target` is unused: there is no process under test, only PostgreSQL and this one. */
  cpu: CpuUse;
}

export interface ByteaLimitSpec {
  /** An empty database of its own. */
  url: string;
  count: number;
  pdfBytes: number;
  concurrency: number;
  postmasterPid: number | undefined;
  signal: AbortSignal;
}

export async function runByteaLimit(spec: ByteaLimitSpec): Promise<ByteaLimitResult> {
  const clients = Array.from({ length: spec.concurrency }, () => new pg.Client({ connectionString: spec.url }));
  try {
    await Promise.all(clients.map((c) => c.connect()));
    for (const statement of DOCUMENTS_TABLE) await clients[0]!.query(statement);
    // A buffer of random bytes per connection, made before the clock starts. Each INSERT first
    // writes its own header over the start, so every PDF differs; the buffer is not touched again
    // until that INSERT has returned, by which time the driver has sent it.
    const buffers = clients.map(() => randomBytes(spec.pdfBytes));
    let next = 0;
    const before = cpuSnapshot({ postmaster: spec.postmasterPid });
    const start = performance.now();
    await Promise.all(
      clients.map(async (client, slot) => {
        const pdf = buffers[slot]!;
        for (let index = next++; index < spec.count && !spec.signal.aborted; index = next++) {
          const header = `%PDF-1.7\n% bytea-limit file ${String(index).padStart(12, '0')}\n`;
          pdf.write(header, 0, 'latin1');
          // The key only has to be distinct and look like the real one; hashing each whole PDF
          // here would put this process's CPU, not the database, in the way.
          const sha256 = createHash('sha256').update(header).digest('hex');
          await client.query(INSERT_DOCUMENT, [sha256, pdf.length, 'application/pdf', 'database', null, pdf]);
        }
      }),
    );
    const elapsedS = (performance.now() - start) / 1000;
    const cpu = cpuBetween(before, cpuSnapshot({ postmaster: spec.postmasterPid }));
    if (spec.signal.aborted) throw spec.signal.reason as Error;
    const { rows } = await clients[0]!.query<{ n: string }>('SELECT count(*) AS n FROM documents');
    const stored = Number(rows[0]?.n ?? 0);
    return { files: spec.count, stored, bytes: stored * spec.pdfBytes, elapsedS, concurrency: spec.concurrency, cpu };
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}
