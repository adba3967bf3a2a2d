import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { INCOMING_DIR } from './filesystem-storage.js';

/**
 * A process killed mid-download leaves its temp file in PDF_DIR/.incoming. Removes those older
 * than `olderThanMs` (longer than any download may take, so a live download of another replica
 * sharing the directory is never touched). Returns how many were removed.
 */
export async function removeAbandonedUploads(pdfDir: string, olderThanMs: number, now = Date.now()): Promise<number> {
  const incoming = path.join(pdfDir, INCOMING_DIR);
  const names = await readdir(incoming).catch(() => [] as string[]);
  let removed = 0;
  for (const name of names.filter((n) => n.endsWith('.partial'))) {
    const file = path.join(incoming, name);
    const info = await stat(file).catch(() => undefined);
    if (info && now - info.mtimeMs > olderThanMs) {
      await rm(file, { force: true });
      removed += 1;
    }
  }
  return removed;
}
