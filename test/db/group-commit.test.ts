import { describe, expect, it } from 'vitest';
import { createGroupCommitter, DeadlinePassedError, OverloadedError, storeOptionsFor } from '../../src/db/group-commit.js';

/** A writer whose batches finish when the test says so, recording what each batch held. */
function controlledWriter() {
  const batches: number[][] = [];
  const releases: (() => void)[] = [];
  const writes = { inFlight: 0, most: 0 };
  return {
    batches,
    writes,
    releaseAll: () => releases.splice(0).forEach((release) => release()),
    async writeBatch(items: number[]): Promise<string[]> {
      batches.push(items);
      writes.inFlight += 1;
      writes.most = Math.max(writes.most, writes.inFlight);
      await new Promise<void>((resolve) => releases.push(resolve));
      writes.inFlight -= 1;
      if (items.includes(13)) throw new Error('row 13 is refused by the database');
      return items.map((i) => `stored ${i}`);
    },
  };
}

const later = () => Date.now() + 60_000;
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('createGroupCommitter', () => {
  it('writes a lone item at once, in a batch of its own', async () => {
    const writer = controlledWriter();
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items) });
    const result = committer.submit(1, later());
    await tick();
    expect(writer.batches).toEqual([[1]]);
    writer.releaseAll();
    expect(await result).toBe('stored 1');
  });

  it('collects items that arrive while batches are committing into the next batch', async () => {
    const writer = controlledWriter();
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items), maxConcurrentBatches: 1 });
    const results = [committer.submit(1, later())];
    await tick();
    for (let i = 2; i <= 6; i++) results.push(committer.submit(i, later()));
    await tick();
    expect(writer.batches).toEqual([[1]]);
    writer.releaseAll();
    await tick();
    expect(writer.batches).toEqual([[1], [2, 3, 4, 5, 6]]);
    writer.releaseAll();
    expect(await Promise.all(results)).toEqual([1, 2, 3, 4, 5, 6].map((i) => `stored ${i}`));
  });

  it('answers nothing before the batch commits', async () => {
    const writer = controlledWriter();
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items) });
    let settled = false;
    void committer.submit(1, later()).then(() => (settled = true));
    await tick();
    await tick();
    expect(settled).toBe(false);
    writer.releaseAll();
    await tick();
    expect(settled).toBe(true);
  });

  /** Releases every pending write, lets the committer react, until `settled` has settled. */
  async function releaseUntil(writer: ReturnType<typeof controlledWriter>, settled: Promise<unknown>): Promise<void> {
    let done = false;
    void settled.finally(() => (done = true));
    for (let i = 0; i < 50 && !done; i++) {
      writer.releaseAll();
      await tick();
    }
  }

  it('splits a failed batch in halves until the bad item is alone, failing only it', async () => {
    const writer = controlledWriter();
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items), maxConcurrentBatches: 1 });
    const first = committer.submit(1, later());
    await tick();
    const rest = [10, 11, 12, 13, 14, 15, 16, 17].map((i) => committer.submit(i, later()));
    const settled = Promise.allSettled([first, ...rest]);
    await releaseUntil(writer, settled);
    expect((await settled).map((s) => s.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
    // 8 rows: the bad one is found in 6 statements after the batch (row by row would take 8).
    expect(writer.batches).toEqual([[1], [10, 11, 12, 13, 14, 15, 16, 17], [10, 11, 12, 13], [10, 11], [12, 13], [12], [13], [14, 15, 16, 17]]);
    expect(committer.stats.fallbacks).toBe(1);
  });

  it('retries the halves within the failed batch\'s own slot, never more writes at once than maxConcurrentBatches', async () => {
    const writer = controlledWriter();
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items), maxConcurrentBatches: 2 });
    const results = [committer.submit(1, later()), committer.submit(2, later())];
    await tick();
    results.push(...[11, 12, 13, 14, 15].map((i) => committer.submit(i, later())));
    writer.releaseAll(); // [1] and [2]; then [11..15] takes one slot and the other is idle
    await tick();
    expect(writer.batches).toEqual([[1], [2], [11, 12, 13, 14, 15]]);
    writer.releaseAll(); // [11..15] fails
    await tick();
    results.push(committer.submit(21, later())); // a new delivery still gets the other slot
    const settled = Promise.allSettled(results);
    await tick();
    expect(writer.batches.slice(3)).toEqual([[11, 12, 13], [21]]);
    await releaseUntil(writer, settled);
    expect((await settled).filter((s) => s.status === 'rejected')).toHaveLength(1);
    expect(writer.batches.slice(3)).toEqual([[11, 12, 13], [21], [11, 12], [13], [14, 15]]);
    expect(writer.writes.most).toBe(2);
  });

  it('does not retry a row whose deadline passed before its half was written', async () => {
    const writer = controlledWriter();
    let now = 1000;
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items), maxConcurrentBatches: 1, now: () => now });
    const first = committer.submit(1, 60_000);
    await tick();
    const patient = committer.submit(12, 60_000);
    const bad = committer.submit(13, 60_000);
    const late = committer.submit(14, 3000);
    const outcomes = [expect(late).rejects.toBeInstanceOf(DeadlinePassedError), expect(bad).rejects.toThrow(/row 13/)];
    writer.releaseAll(); // [1]
    await tick();
    writer.releaseAll(); // [12, 13, 14] fails
    await tick();
    now = 5000; // 14's request was answered 503 while the first half was retried
    await releaseUntil(writer, Promise.allSettled([patient, bad, late]));
    await Promise.all(outcomes);
    expect(await patient).toBe('stored 12');
    await first;
    expect(writer.batches).toEqual([[1], [12, 13, 14], [12, 13], [12], [13]]);
  });

  it('refuses new items when the queue is full instead of queuing forever', async () => {
    const writer = controlledWriter();
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items), maxConcurrentBatches: 1, maxQueued: 2 });
    const accepted = [committer.submit(1, later())];
    await tick();
    accepted.push(committer.submit(2, later()), committer.submit(3, later()));
    await expect(committer.submit(4, later())).rejects.toBeInstanceOf(OverloadedError);
    writer.releaseAll();
    await tick();
    writer.releaseAll();
    expect(await Promise.all(accepted)).toHaveLength(3);
  });

  it('does not write an item whose deadline passed while it waited', async () => {
    const writer = controlledWriter();
    let now = 1000;
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items), maxConcurrentBatches: 1, now: () => now });
    const first = committer.submit(1, 5000);
    await tick();
    const late = committer.submit(2, 1500);
    now = 2000;
    writer.releaseAll();
    await expect(late).rejects.toBeInstanceOf(DeadlinePassedError);
    await first;
    expect(writer.batches).toEqual([[1]]);
  });

  it('with WRITE_BATCH_MAX_ROWS=1 writes every item alone, as many at once as the pool holds', async () => {
    const writer = controlledWriter();
    const options = storeOptionsFor({ writeBatchMaxRows: 1, databasePoolSize: 3 });
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items), ...options });
    const results = [1, 2, 3, 4].map((i) => committer.submit(i, later()));
    await tick();
    expect(writer.batches).toEqual([[1], [2], [3]]);
    writer.releaseAll();
    await tick();
    expect(writer.batches).toEqual([[1], [2], [3], [4]]);
    writer.releaseAll();
    expect(await Promise.all(results)).toEqual([1, 2, 3, 4].map((i) => `stored ${i}`));
  });

  it('batches up to WRITE_BATCH_MAX_ROWS items otherwise', () => {
    expect(storeOptionsFor({ writeBatchMaxRows: 500, databasePoolSize: 10 })).toEqual({ maxBatchSize: 500 });
  });
});
