import { createHash } from 'node:crypto';
import type { Database } from '../db/client.js';
import { assertWritten, finishedError, recordDocument } from './document-rows.js';
import type { PendingPdf } from './pdf-storage.js';

/**
 * Keeps the download in memory until commit, then stores it in `documents.content`.
 * Memory is bounded by the downloader, which stops a body past its maximum size.
 */
export async function beginDatabasePdf(db: Database): Promise<PendingPdf> {
  // undefined once committed or discarded, so late writes fail loudly and the bytes can be freed
  let chunks: Uint8Array[] | undefined = [];
  return {
    async write(chunk) {
      if (chunks === undefined) throw finishedError('write to');
      chunks.push(chunk);
    },
    async commit(meta) {
      if (chunks === undefined) throw finishedError('commit');
      const content = Buffer.concat(chunks);
      chunks = undefined;
      const sha256 = createHash('sha256').update(content).digest('hex');
      assertWritten(meta, { sha256, sizeBytes: content.length });
      return recordDocument(db, { ...meta, storage: 'database', storageKey: null, content });
    },
    async discard() {
      chunks = undefined;
    },
  };
}
