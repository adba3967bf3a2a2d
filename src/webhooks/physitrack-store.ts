import type { Database } from '../db/client.js';
import { createGroupCommitter, type StoreOptions } from '../db/group-commit.js';
import { insertDeliveries, type NewDelivery, type StoredDelivery } from '../downloads/intake.js';

export type PhysitrackDelivery = NewDelivery;

export interface PhysitrackStore {
  /** Resolves with the notice's delivery (new, or the earlier one of the same notice) once committed. */
  save(delivery: PhysitrackDelivery, deadlineAt: number): Promise<StoredDelivery>;
}

/** Concurrent notices are group-committed: one insert statement per batch (see db/group-commit.ts). */
export function createPhysitrackStore(db: Database, options: StoreOptions = {}): PhysitrackStore {
  const committer = createGroupCommitter<PhysitrackDelivery, StoredDelivery>({ writeBatch: (batch) => insertDeliveries(db, batch), ...options });
  return { save: (delivery, deadlineAt) => committer.submit(delivery, deadlineAt) };
}
