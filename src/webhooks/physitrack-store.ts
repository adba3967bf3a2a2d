import type { Database } from '../db/client.js';
import { createGroupCommitter, type StoreOptions } from '../db/group-commit.js';
import { insertDeliveries, type NewDelivery, type StoredDelivery } from '../downloads/intake.js';
import type { DurableWrite } from '../spool/durable-write.js';

export type PhysitrackDelivery = NewDelivery;

export interface PhysitrackStore {
  /**
   * Resolves once the delivery is durable: committed, with the notice's delivery (new, or the
   * earlier one of the same notice), or, while PostgreSQL is away, in this replica's spool
   * (`spooled`, no delivery yet: it is written when the spool is replayed).
   */
  save(delivery: PhysitrackDelivery, deadlineAt: number): Promise<StoredDelivery & { spooled?: true }>;
}

/** Concurrent notices are group-committed: one insert statement per batch (see db/group-commit.ts). */
export function createPhysitrackStore(db: Database, options: StoreOptions = {}, durable?: DurableWrite): PhysitrackStore {
  const committer = createGroupCommitter<PhysitrackDelivery, StoredDelivery>({ writeBatch: (batch) => insertDeliveries(db, batch), ...options });
  return {
    async save(delivery, deadlineAt) {
      if (!durable) return committer.submit(delivery, deadlineAt);
      const outcome = await durable.write({ vendor: 'physitrack', delivery }, (dbDeadline) => committer.submit(delivery, dbDeadline), deadlineAt);
      return outcome.spooled ? { id: null, redelivery: false, downloadStatus: null, spooled: true } : outcome.result;
    },
  };
}
