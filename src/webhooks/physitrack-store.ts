import type { Database } from '../db/client.js';
import { createGroupCommitter, type StoreOptions } from '../db/group-commit.js';
import { insertDeliveries, type NewDelivery } from '../downloads/queue.js';

export type PhysitrackDelivery = NewDelivery;

export interface PhysitrackStore {
  /** Resolves with the delivery id once the row is committed. */
  save(delivery: PhysitrackDelivery, deadlineAt: number): Promise<bigint>;
}

/** Concurrent notices are group-committed: one insert statement per batch (see db/group-commit.ts). */
export function createPhysitrackStore(db: Database, options: StoreOptions = {}): PhysitrackStore {
  const committer = createGroupCommitter<PhysitrackDelivery, bigint>({ writeBatch: (batch) => insertDeliveries(db, batch), ...options });
  return { save: (delivery, deadlineAt) => committer.submit(delivery, deadlineAt) };
}
