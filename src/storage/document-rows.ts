import { createHash } from 'node:crypto';
import type pg from 'pg';
import { inTransaction, poolOf, type Database } from '../db/client.js';

export type StorageErrorCode =
  | 'STORAGE_ERR_MISMATCH' // commit was asked for other bytes than were written: a caller bug
  | 'STORAGE_ERR_FINISHED' // used after commit, discard or a failed write: a caller bug
  | 'STORAGE_ERR_MISSING' // a documents row points at a file that is not there
  | 'STORAGE_ERR_CONFLICT'; // the row for this sha256 kept vanishing while it was being recorded

export class StorageError extends Error {
  override readonly name = 'StorageError';
  constructor(
    readonly code: StorageErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface PdfMeta {
  sha256: string;
  sizeBytes: number;
  contentType: string;
}

export interface CommittedPdf {
  documentId: bigint;
  /** True when a row for this sha256 already existed, so nothing was stored again. */
  deduplicated: boolean;
}

/** Refuses a commit whose metadata does not describe the bytes actually written. */
export function assertWritten(meta: PdfMeta, written: { sha256: string; sizeBytes: number }): void {
  if (meta.sha256 === written.sha256 && meta.sizeBytes === written.sizeBytes) return;
  const message =
    `Refusing to commit a PDF as sha256 ${meta.sha256} (${meta.sizeBytes} bytes): ` +
    `the bytes written have sha256 ${written.sha256} (${written.sizeBytes} bytes).`;
  throw new StorageError('STORAGE_ERR_MISMATCH', message);
}

/** sha256 of everything written so far; once read, it is final and further writes are refused. */
export function createRunningHash() {
  const hash = createHash('sha256');
  let digest: string | undefined;
  return {
    update: (chunk: Uint8Array) => void hash.update(chunk),
    sha256: () => (digest ??= hash.digest('hex')),
    finished: () => digest !== undefined,
  };
}

export function finishedError(action: string): StorageError {
  const message = `Cannot ${action} a PDF that was already committed or discarded, or whose write failed.`;
  return new StorageError('STORAGE_ERR_FINISHED', message);
}

const FIND_DOCUMENT = 'SELECT id FROM documents WHERE sha256 = $1';

const INSERT_DOCUMENT = `
INSERT INTO documents (sha256, size_bytes, content_type, storage, storage_key, content)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (sha256) DO NOTHING
RETURNING id`;

export interface NewDocument extends PdfMeta {
  storage: 'database' | 'filesystem';
  storageKey: string | null;
  content: Uint8Array | null;
}

/**
 * Returns the documents row for this content, inserting it when it is new.
 * Looking first keeps a duplicate's bytes off the wire and leaves the existing row untouched (no
 * update, no row lock, no dead tuple). ON CONFLICT DO NOTHING settles two inserts racing past the
 * lookup: the loser waits for the winner to commit and inserts nothing, and its next lookup, being
 * a new statement under READ COMMITTED, sees the winner's row. The loop only repeats if that row is
 * deleted in between.
 */
export async function recordDocument(db: Database, row: NewDocument): Promise<CommittedPdf> {
  // Plain pg: Prisma would base64 the bytes on the way (see poolOf).
  const pool = poolOf(db);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const [existing] = (await pool.query<{ id: string }>(FIND_DOCUMENT, [row.sha256])).rows;
    if (existing) return { documentId: BigInt(existing.id), deduplicated: true };
    const { rows } = await pool.query<{ id: string }>(INSERT_DOCUMENT, [row.sha256, row.sizeBytes, row.contentType, row.storage, row.storageKey, row.content]);
    const inserted = rows[0];
    if (inserted) return { documentId: BigInt(inserted.id), deduplicated: false };
  }
  const message = `The documents row for sha256 ${row.sha256} disappeared each time it was looked up.`;
  throw new StorageError('STORAGE_ERR_CONFLICT', message);
}

export interface DocumentRow {
  sha256: string;
  sizeBytes: number;
  contentType: string;
  storage: 'database' | 'filesystem';
  storageKey: string | null;
  content: Uint8Array | null;
}

const READ_DOCUMENT = `
SELECT sha256, size_bytes, content_type, storage, storage_key, content
FROM documents WHERE id = $1`;

export async function readDocument(db: Database, documentId: bigint): Promise<DocumentRow | undefined> {
  const [row] = await db.$queryRawUnsafe<Record<string, unknown>[]>(READ_DOCUMENT, documentId);
  if (!row) return undefined;
  return {
    sha256: row.sha256 as string,
    sizeBytes: Number(row.size_bytes),
    contentType: row.content_type as string,
    storage: row.storage as DocumentRow['storage'],
    storageKey: row.storage_key as string | null,
    content: row.content as Uint8Array | null,
  };
}

export interface DeletedDocument {
  storage: string;
  storage_key: string | null;
}

const LOCK_DOCUMENTS = 'SELECT id FROM documents WHERE id = ANY ($1::bigint[]) ORDER BY id FOR UPDATE';

const DELETE_UNREFERENCED = `DELETE FROM documents d WHERE d.id = ANY ($1::bigint[])
  AND NOT EXISTS (SELECT 1 FROM physitrack_deliveries x WHERE x.document_id = d.id)
  AND NOT EXISTS (SELECT 1 FROM physitrack_programs g WHERE g.current_document_id = d.id)
  AND ($2::boolean OR NOT EXISTS (SELECT 1 FROM document_owners o WHERE o.document_id = d.id))
  RETURNING d.storage, d.storage_key`;

/**
 * The PDFs a patient's deliveries were ever given (document_owners, written by a trigger whenever a
 * delivery gets a PDF): also those whose deliveries retention purged since. For an erasure, in
 * this order, then deleteUnreferencedDocuments; $1 source, $2 patient. The documents are locked
 * before their owner rows are deleted: a purge of documents locks a document, then deletes its
 * owners (the foreign key's cascade), and the other order deadlocked with it.
 */
export const LOCK_DOCUMENTS_OF_PATIENT = `SELECT d.id FROM documents d
  WHERE d.id IN (SELECT o.document_id FROM document_owners o WHERE o.source_id = $1 AND o.patient_id = $2) ORDER BY d.id FOR UPDATE`;
export const DELETE_OWNERS_OF_PATIENT = 'DELETE FROM document_owners WHERE source_id = $1 AND patient_id = $2 RETURNING document_id';
/** The same for every patient of a source (offboarding); $1 source. */
export const LOCK_DOCUMENTS_OF_SOURCE = `SELECT d.id FROM documents d
  WHERE d.id IN (SELECT o.document_id FROM document_owners o WHERE o.source_id = $1) ORDER BY d.id FOR UPDATE`;
export const DELETE_OWNERS_OF_SOURCE = 'DELETE FROM document_owners WHERE source_id = $1 RETURNING document_id';

/**
 * Deletes those of `ids` that nothing points at (no delivery, no program's current document, and
 * unless `evenIfOwned` no owner: retention's purge of old PDFs takes their owners with them), in
 * the caller's transaction; resolves with what their files need. Two statements on purpose: FOR
 * UPDATE waits for a transaction that is making a delivery point at one of them (its foreign-key
 * check holds a KEY SHARE lock on the row) and then holds off new ones until COMMIT; the DELETE, a
 * new statement under READ COMMITTED, then sees that pointer. In one statement NOT EXISTS would be
 * judged on a snapshot taken before the wait, and take the PDF another patient's delivery had just
 * been given (its document_id set to NULL by the foreign key, its file removed).
 */
export async function deleteUnreferencedDocuments(client: pg.ClientBase, ids: readonly string[], { evenIfOwned = false } = {}): Promise<DeletedDocument[]> {
  if (ids.length === 0) return [];
  await client.query(LOCK_DOCUMENTS, [ids]);
  return (await client.query<DeletedDocument>(DELETE_UNREFERENCED, [ids, evenIfOwned])).rows;
}

/** One document, in a transaction of its own: the PDF of a delivery that was erased while it was being downloaded. */
export async function deleteUnreferencedDocument(db: Database, documentId: bigint): Promise<DeletedDocument | undefined> {
  const [row] = await inTransaction(db, (client) => deleteUnreferencedDocuments(client, [String(documentId)]));
  return row;
}

const DOCUMENT_OF_SOURCES = `SELECT 1 FROM documents d WHERE d.id = $1 AND ($2::boolean
  OR EXISTS (SELECT 1 FROM physitrack_deliveries x WHERE x.document_id = d.id AND x.source_id = ANY ($3::text[]))
  OR EXISTS (SELECT 1 FROM physitrack_programs g WHERE g.current_document_id = d.id AND g.source_id = ANY ($3::text[])))`;

/** Whether the document exists and, unless `all`, is the PDF of a delivery or program of one of `sourceIds`. */
export async function documentOfSources(db: Database, documentId: bigint, scope: { all: true } | { all: false; sourceIds: readonly string[] }): Promise<boolean> {
  const { rowCount } = await poolOf(db).query(DOCUMENT_OF_SOURCES, [documentId, scope.all, scope.all ? [] : scope.sourceIds]);
  return (rowCount ?? 0) > 0;
}
