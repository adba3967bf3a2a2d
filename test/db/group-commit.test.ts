import { describe, expect, it } from 'vitest';
import { createGroupCommitter, DeadlinePassedError, OverloadedError, storeOptionsFor } from '../../src/db/group-commit.js';

/** A writer whose batches finish when the test says so, recording what each batch held. */
function controlledWriter() {
  const batches: number[][] = [];
  const releases: (() => void)[] = [];
  return {
    batches,
    releaseAll: () => releases.splice(0).forEach((release) => release()),
    async writeBatch(items: number[]): Promise<string[]> {
      batches.push(items);
      await new Promise<void>((resolve) => releases.push(resolve));
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

  it('falls back to one write per item when a batch fails, failing only the bad item', async () => {
    const writer = controlledWriter();
    const committer = createGroupCommitter({ writeBatch: (items: number[]) => writer.writeBatch(items), maxConcurrentBatches: 1 });
    const first = committer.submit(1, later());
    await tick();
    const rest = [12, 13, 14].map((i) => committer.submit(i, later()));
    writer.releaseAll(); // [1]
    await tick();
    writer.releaseAll(); // [12, 13, 14] fails
    await tick();
    await tick();
    writer.releaseAll(); // [12], [13], [14] alone
    const settled = await Promise.allSettled([first, ...rest]);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(writer.batches).toEqual([[1], [12, 13, 14], [12], [13], [14]]);
    expect(committer.stats.fallbacks).toBe(1);
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
