/**
 * Group commit for the ack path: concurrent requests' rows are written together in one statement,
 * and each request is answered only once its batch has committed.
 *
 * There is no timer window. A batch starts as soon as a writer is free, with everything queued by
 * then, so a lone request is written at once, and under load the queue grows while the running
 * batches commit and the next batch takes it all. Batches are bounded, the queue is bounded, and an
 * item whose deadline passed while queued is not written (its request has already been answered).
 */

export class OverloadedError extends Error {
  readonly code = 'WH_ERR_OVERLOADED';
  constructor(message = 'too many deliveries are waiting to be written') {
    super(message);
    this.name = 'OverloadedError';
  }
}

export class DeadlinePassedError extends Error {
  readonly code = 'WH_ERR_DEADLINE_PASSED';
  constructor() {
    super('the ack deadline passed while the delivery waited to be written');
    this.name = 'DeadlinePassedError';
  }
}

export interface GroupCommitOptions<T, R> {
  /** Writes all items in one statement and returns one result per item, in order. */
  writeBatch(items: T[]): Promise<R[]>;
  maxBatchSize?: number;
  /** Batches committing at once; each holds one database connection. */
  maxConcurrentBatches?: number;
  /** Items waiting (not yet in a batch) before new ones are refused. */
  maxQueued?: number;
  now?: () => number;
}

/** What a store built on a group committer lets its caller tune. */
export type StoreOptions = Pick<GroupCommitOptions<unknown, unknown>, 'maxBatchSize' | 'maxConcurrentBatches'>;

/**
 * WRITE_BATCH_MAX_ROWS=1 turns batching off: each delivery gets its own statement, and, as in a
 * receiver without group commit, as many run at once as the pool has connections.
 */
export function storeOptionsFor(config: { writeBatchMaxRows: number; databasePoolSize: number }): StoreOptions {
  if (config.writeBatchMaxRows === 1) return { maxBatchSize: 1, maxConcurrentBatches: config.databasePoolSize };
  return { maxBatchSize: config.writeBatchMaxRows };
}

export interface GroupCommitter<T, R> {
  /** Resolves once `item` is committed; rejects with OverloadedError or DeadlinePassedError, or the write's error. */
  submit(item: T, deadlineAt: number): Promise<R>;
  readonly stats: { batches: number; rows: number; fallbacks: number; queued: () => number };
}

interface Pending<T, R> {
  item: T;
  deadlineAt: number;
  resolve(result: R): void;
  reject(err: unknown): void;
}

export function createGroupCommitter<T, R>(options: GroupCommitOptions<T, R>): GroupCommitter<T, R> {
  const { writeBatch, maxBatchSize = 500, maxConcurrentBatches = 2, maxQueued = 5000, now = Date.now } = options;
  const queue: Pending<T, R>[] = [];
  let running = 0;
  const stats = { batches: 0, rows: 0, fallbacks: 0, queued: () => queue.length };

  /**
   * A batch that fails is split in halves, and each half written as a batch of its own, so one bad
   * row fails only its own request and is found in about 2·log2(n) statements: retried row by row,
   * the end of a large batch would pass its deadline first. The halves go one after another in the
   * failed batch's own slot, never taking more connections than it did. A row whose deadline passed
   * meanwhile is not written, because its request has already been answered 503.
   */
  async function settle(part: Pending<T, R>[]): Promise<void> {
    const current = now();
    const live = part.filter((p) => {
      if (p.deadlineAt > current) return true;
      p.reject(new DeadlinePassedError());
      return false;
    });
    if (live.length === 0) return;
    try {
      const results = await writeBatch(live.map((p) => p.item));
      live.forEach((p, i) => p.resolve(results[i] as R));
    } catch (err) {
      if (live.length === 1) return live[0]!.reject(err);
      await splitAndSettle(live);
    }
  }

  async function splitAndSettle(batch: Pending<T, R>[]): Promise<void> {
    const middle = Math.ceil(batch.length / 2);
    await settle(batch.slice(0, middle));
    await settle(batch.slice(middle));
  }

  async function run(batch: Pending<T, R>[]): Promise<void> {
    try {
      const results = await writeBatch(batch.map((p) => p.item));
      stats.batches += 1;
      stats.rows += batch.length;
      batch.forEach((p, i) => p.resolve(results[i] as R));
    } catch (err) {
      if (batch.length === 1) return batch[0]!.reject(err);
      stats.fallbacks += 1;
      await splitAndSettle(batch);
    }
  }

  function pump(): void {
    while (running < maxConcurrentBatches && queue.length > 0) {
      const taken = queue.splice(0, maxBatchSize);
      const current = now();
      const batch = taken.filter((p) => {
        if (p.deadlineAt > current) return true;
        p.reject(new DeadlinePassedError());
        return false;
      });
      if (batch.length === 0) continue;
      running += 1;
      void run(batch).finally(() => {
        running -= 1;
        pump();
      });
    }
  }

  return {
    submit(item, deadlineAt) {
      if (queue.length >= maxQueued) return Promise.reject(new OverloadedError());
      return new Promise<R>((resolve, reject) => {
        queue.push({ item, deadlineAt, resolve, reject });
        pump();
      });
    },
    stats,
  };
}
