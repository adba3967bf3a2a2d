import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeAbandonedUploads } from '../../src/storage/abandoned-uploads.js';
import { INCOMING_DIR } from '../../src/storage/filesystem-storage.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('removeAbandonedUploads', () => {
  it('removes old temp files only, leaving recent ones and stored PDFs alone', async () => {
    const pdfDir = await mkdtemp(path.join(os.tmpdir(), 'wr-sweep-'));
    dirs.push(pdfDir);
    const incoming = path.join(pdfDir, INCOMING_DIR);
    await mkdir(incoming);
    await writeFile(path.join(incoming, 'old.partial'), 'x');
    await writeFile(path.join(incoming, 'recent.partial'), 'x');
    await writeFile(path.join(incoming, 'other.txt'), 'x');
    const hourAgo = new Date(Date.now() - 3600_000);
    await utimes(path.join(incoming, 'old.partial'), hourAgo, hourAgo);
    await utimes(path.join(incoming, 'other.txt'), hourAgo, hourAgo);

    expect(await removeAbandonedUploads(pdfDir, 120_000)).toBe(1);
    expect((await readdir(incoming)).sort()).toEqual(['other.txt', 'recent.partial']);
  });

  it('does nothing when there is no incoming directory yet', async () => {
    expect(await removeAbandonedUploads(path.join(os.tmpdir(), 'wr-sweep-does-not-exist'), 1000)).toBe(0);
  });
});
