import { Readable } from 'node:stream';
import type { Database } from '../db/client.js';
import type { DownloadSink } from '../downloads/guarded-fetch.js';
import { beginDatabasePdf } from './database-storage.js';
import { removeFiles } from '../retention.js';
import { deleteUnreferencedDocument, readDocument, type CommittedPdf, type PdfMeta } from './document-rows.js';
import { beginFilesystemPdf, openStoredFile } from './filesystem-storage.js';

export { StorageError, type StorageErrorCode, type CommittedPdf, type PdfMeta } from './document-rows.js';

export type StorageKind = 'database' | 'filesystem';

/** `config.storage` */
export interface StorageSettings {
  kind: StorageKind;
  /** Where the filesystem backend keeps files; also read by `open()` whatever `kind` is now. */
  pdfDir: string;
}

/** One download on its way into storage: the downloader's sink, then committed or discarded. */
export interface PendingPdf extends DownloadSink {
  /**
   * Makes the bytes durable and returns the documents row for this content: the existing one when
   * the same sha256 is already stored (then nothing is stored again). Refuses, and keeps nothing,
   * when `meta` does not describe the bytes written. Either way the pending PDF is finished.
   */
  commit(meta: PdfMeta): Promise<CommittedPdf>;
  /** Throws away what was written. Idempotent and never throws. */
  discard(): Promise<void>;
}

export interface StoredPdf extends PdfMeta {
  /** The stored bytes, unverified: a caller that needs certainty hashes them against `sha256`. */
  stream: Readable;
}

export interface PdfStorage {
  readonly kind: StorageKind;
  /** Starts storing one download; the returned object is the downloader's sink. */
  begin(): Promise<PendingPdf>;
  /** The stored document, or undefined for an unknown id. */
  open(documentId: bigint): Promise<StoredPdf | undefined>;
  /** Removes a document (and its file) that nothing points at; one that is referenced stays. */
  forget(documentId: bigint): Promise<void>;
}

/** Views, not copies, so a large document is not held in memory twice. */
function* slices(content: Uint8Array, size = 64 * 1024): Generator<Buffer> {
  for (let start = 0; start < content.length; start += size) {
    yield Buffer.from(content.buffer, content.byteOffset + start, Math.min(size, content.length - start));
  }
}

/**
 * Reads by the row's own `storage` column, not by `kind`, so documents stored before
 * PDF_STORAGE was switched stay readable.
 */
async function openDocument(db: Database, pdfDir: string, documentId: bigint): Promise<StoredPdf | undefined> {
  const row = await readDocument(db, documentId);
  if (row === undefined) return undefined;
  const meta = { sha256: row.sha256, sizeBytes: row.sizeBytes, contentType: row.contentType };
  if (row.storage === 'database') return { ...meta, stream: Readable.from(slices(row.content ?? new Uint8Array()), { objectMode: false }) };
  return { ...meta, stream: await openStoredFile(pdfDir, row.storageKey ?? '') };
}

export function createStorage(settings: StorageSettings, db: Database): PdfStorage {
  const { kind, pdfDir } = settings;
  return {
    kind,
    begin: () => (kind === 'database' ? beginDatabasePdf(db) : beginFilesystemPdf(db, pdfDir)),
    open: (documentId) => openDocument(db, pdfDir, documentId),
    async forget(documentId) {
      const row = await deleteUnreferencedDocument(db, documentId);
      if (row) await removeFiles(db, pdfDir, [row], { removed: 0, missing: 0, refused: 0 });
    },
  };
}
