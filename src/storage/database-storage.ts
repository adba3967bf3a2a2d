import type { Database } from '../db/client.js';
import { assertWritten, createRunningHash, finishedError, recordDocument } from './document-rows.js';
import type { PendingPdf } from './pdf-storage.js';

/**
 * Keeps the download in memory until commit, then stores it in `documents.content`.
 * Memory is bounded by the downloader, which stops a body past its maximum size.
 */
export async function beginDatabasePdf(db: Database): Promise<PendingPdf> {
  // undefined once committed or discarded, so late writes fail loudly and the bytes can be freed
  let chunks: Uint8Array[] | undefined = [];
  const hash = createRunningHash();
  return {
    sha256: () => hash.sha256(),
    async write(chunk) {
      if (chunks === undefined || hash.finished()) throw finishedError('write to');
      hash.update(chunk);
      chunks.push(chunk);
    },
    async commit(meta) {
      if (chunks === undefined) throw finishedError('commit');
      const content = Buffer.concat(chunks);
      chunks = undefined;
      assertWritten(meta, { sha256: hash.sha256(), sizeBytes: content.length });
      return recordDocument(db, { ...meta, storage: 'database', storageKey: null, content });
    },
    async discard() {
      chunks = undefined;
    },
  };
}
