import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../src/audit.js';
import { diskBytesOf, nodeIo, openJournal, SpoolFailedError, SpoolFullError, type JournalIo } from '../../src/spool/journal.js';
import { CorruptRecordError, decodeRecord, encodeRecord, type SpooledDelivery } from '../../src/spool/records.js';
import { toPatiroEvent } from '../../src/webhooks/patiro-payload.js';
import { newDelivery } from '../helpers/physitrack.js';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wr-journal-'));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

let n = 0;
export function patiroSpooled(data: Record<string, unknown> = { id: 'p1', name: 'Ada' }): SpooledDelivery {
  n += 1;
  return {
    vendor: 'patiro',
    delivery: {
      receipt: newReceipt(),
      sourceId: 'default',
      event: toPatiroEvent({ eventId: `e${n}`, eventType: 'PatientUpdated', timestamp: '2026-11-01T10:00:00Z', data }),
      signedAt: new Date(),
      bodySha256: 'd'.repeat(64),
      sourceAddress: '203.0.113.7',
    },
  };
}

/** Counts the fsyncs the journal makes, and fails the one chosen. */
function countingIo(failAt?: { call: 'writeDurably' | 'rename' | 'syncDirectory'; code: string }) {
  const calls = { writeDurably: 0, rename: 0, syncDirectory: 0 };
  const io: JournalIo = {
    async writeDurably(file, data) {
      calls.writeDurably += 1;
      if (failAt?.call === 'writeDurably') throw Object.assign(new Error(`${failAt.code}: injected`), { code: failAt.code });
      return nodeIo.writeDurably(file, data);
    },
    async rename(from, to) {
      calls.rename += 1;
      if (failAt?.call === 'rename') throw Object.assign(new Error(`${failAt.code}: injected`), { code: failAt.code });
      return nodeIo.rename(from, to);
    },
    async syncDirectory(dir) {
      calls.syncDirectory += 1;
      if (failAt?.call === 'syncDirectory') throw Object.assign(new Error(`${failAt.code}: injected`), { code: failAt.code });
      return nodeIo.syncDirectory(dir);
    },
  };
  return { io, calls };
}

describe('a spool record', () => {
  it('reads back as it was written, one line with its checksum', () => {
    const spooled = patiroSpooled();
    const line = encodeRecord(spooled);
    expect(line.at(-1)).toBe(0x0a);
    expect(line.subarray(0, -1).includes(0x0a)).toBe(false);
    expect(decodeRecord(line.subarray(0, -1))).toEqual(spooled);
    const physitrack: SpooledDelivery = { vendor: 'physitrack', delivery: newDelivery({ programDate: null, programCreatedAt: null }) };
    expect(decodeRecord(encodeRecord(physitrack).subarray(0, -1))).toEqual(physitrack);
  });

  it('is refused when one byte is flipped, or when it is cut short', () => {
    const line = encodeRecord(patiroSpooled()).subarray(0, -1);
    for (let i = 0; i < line.length; i += 7) {
      const flipped = Buffer.from(line);
      flipped[i] = flipped[i]! ^ 0x01;
      expect(() => decodeRecord(flipped), `byte ${i}`).toThrow(CorruptRecordError);
    }
    expect(() => decodeRecord(line.subarray(0, line.length - 3))).toThrow(CorruptRecordError);
  });
});

describe('the journal', () => {
  it('writes one file for a group of deliveries waiting together: two fsyncs for all of them', async () => {
    const dir = await tempDir();
    const { io, calls } = countingIo();
    const journal = await openJournal({ dir, maxBytes: 1 << 30, io });
    await journal.append(patiroSpooled());
    await Promise.all(Array.from({ length: 50 }, () => journal.append(patiroSpooled())));
    // The first alone, then the 49 that waited behind it in one group.
    expect(calls.writeDurably).toBeLessThanOrEqual(3);
    expect(calls.syncDirectory).toBe(calls.writeDurably);
    const files = journal.files();
    expect(files.reduce((sum, f) => sum + f.records, 0)).toBe(51);
    expect(journal.stats()).toMatchObject({ records: 51, state: 'ok' });
    const text = await readFile(path.join(dir, files.at(-1)!.name), 'utf8');
    expect(text.trimEnd().split('\n').at(-1)).toBe(`end ${files.at(-1)!.records}`);
  });

  it('keeps files in arrival order, and counts what waits from the directory alone after a restart', async () => {
    const dir = await tempDir();
    const journal = await openJournal({ dir, maxBytes: 1 << 30 });
    for (let i = 0; i < 5; i++) await journal.append(patiroSpooled());
    const names = journal.files().map((f) => f.name);
    expect([...names].sort()).toEqual(names);
    // A crash mid-write leaves a temporary file: it was never answered, and goes at the next start.
    await writeFile(path.join(dir, '.tmp-000000000000001-00000009-1-3.jnl'), 'half a record');
    const reopened = await openJournal({ dir, maxBytes: 1 << 30 });
    expect(reopened.files().map((f) => f.name)).toEqual(names);
    expect(reopened.stats()).toMatchObject({ records: 5, bytes: journal.stats().bytes });
    expect((await readdir(dir)).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
  });

  it('refuses a delivery that would pass its limit', async () => {
    const dir = await tempDir();
    // Each file is counted as what it takes on disk: whole 4 KiB blocks.
    const journal = await openJournal({ dir, maxBytes: 4096 * 2 + 2048 });
    await journal.append(patiroSpooled());
    await journal.append(patiroSpooled());
    await expect(journal.append(patiroSpooled())).rejects.toBeInstanceOf(SpoolFullError);
    await journal.remove(journal.files()[0]!.name);
    await journal.append(patiroSpooled());
    expect(journal.stats().bytes).toBe(2 * diskBytesOf(encodeRecord(patiroSpooled()).length));
  });

  it('never passes its limit, counting the group being written and those waiting', async () => {
    const dir = await tempDir();
    const maxBytes = 1024 * 1024;
    const journal = await openJournal({ dir, maxBytes });
    const big = () => patiroSpooled({ id: 'p', notes: 'x'.repeat(8000) });
    const settle = (p: Promise<void>) => p.then(() => 'stored', (err: unknown) => (err instanceof SpoolFullError ? 'refused' : 'failed'));
    // The first is written alone; the other 59 wait, and are written as one group once it is done.
    const first = Array.from({ length: 60 }, () => settle(journal.append(big())));
    await first[0];
    // That group is being written now: what arrives meanwhile must count it.
    const second = Array.from({ length: 120 }, () => settle(journal.append(big())));
    const outcomes = await Promise.all([...first, ...second]);
    expect(outcomes).not.toContain('failed');
    expect(outcomes).toContain('refused');
    const onDisk = (await Promise.all((await readdir(dir)).map(async (f) => diskBytesOf((await readFile(path.join(dir, f))).length)))).reduce((a, b) => a + b, 0);
    expect(journal.stats().bytes).toBe(onDisk);
    expect(onDisk).toBeLessThanOrEqual(maxBytes);
    expect(onDisk).toBeGreaterThan(maxBytes * 0.8);
  });

  it.each(['writeDurably', 'rename', 'syncDirectory'] as const)('fails the group and takes nothing more after a failed %s (EIO)', async (call) => {
    const dir = await tempDir();
    const { io } = countingIo({ call, code: 'EIO' });
    const journal = await openJournal({ dir, maxBytes: 1 << 30, io });
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => journal.append(patiroSpooled())));
    expect(results.map((r) => r.status)).toEqual(Array(5).fill('rejected'));
    await expect(journal.append(patiroSpooled())).rejects.toBeInstanceOf(SpoolFailedError);
    expect(journal.stats().state).toBe('failed');
    expect(journal.accepting()).toBe(false);
    expect((await readdir(dir)).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
  });
});
