import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { SourceRow } from '../sources/sources-table.js';
import { nodeIo } from './journal.js';

// The replica's own copy of the `sources` rows, so that the clinics' sources authenticate while
// PostgreSQL is away, also after a restart. Kept as the rows are in the table: credentials stay
// sealed with SOURCES_SECRET_KEY (the copy alone lets no one forge a delivery). Only the columns
// the webhooks need, so that health counters changing every second do not rewrite it.

export type CopiedSource = Pick<SourceRow, 'vendor' | 'id' | 'name' | 'tenantRef' | 'status' | 'credentials'>;

export interface SourcesCopy {
  /** The rows last saved, or undefined when there is no copy (or it cannot be read). */
  read(): Promise<CopiedSource[] | undefined>;
  /** Saves the rows durably, when they differ from what was saved last. */
  save(rows: SourceRow[]): Promise<void>;
}

const FILE = 'sources.json';

export function sourcesCopyIn(dir: string): SourcesCopy {
  const file = path.join(dir, FILE);
  let saved: string | undefined;
  return {
    async read() {
      try {
        const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as { rows?: unknown };
        if (!Array.isArray(parsed.rows)) return undefined;
        saved = JSON.stringify(parsed.rows);
        return parsed.rows as CopiedSource[];
      } catch {
        return undefined;
      }
    },
    async save(rows) {
      const copied: CopiedSource[] = rows.map(({ vendor, id, name, tenantRef, status, credentials }) => ({ vendor, id, name, tenantRef, status, credentials }));
      const text = JSON.stringify(copied);
      if (text === saved) return;
      const temp = `${file}.${process.pid}.tmp`;
      await fs.rm(temp, { force: true });
      await nodeIo.writeDurably(temp, Buffer.from(JSON.stringify({ savedAt: new Date().toISOString(), rows: copied })));
      await fs.rename(temp, file);
      await nodeIo.syncDirectory(dir);
      saved = text;
    },
  };
}
