import type { Database } from '../db/client.js';

// This module owns `receiver_replicas`: each running replica and the SOURCES_SECRET_KEY key ids it
// can open. The CLI reads it before sealing credentials, so it never seals with a key that a running
// replica lacks (that replica would answer 503 for the source until restarted with the key).

export interface Replica {
  id: string;
  hostname: string;
  pid: number;
  startedAt: Date;
}

/** A replica not seen for this long is gone (they write every 15 s). */
export const REPLICA_GONE_AFTER_SECONDS = 60;

export async function recordReplica(db: Database, replica: Replica, keyIds: string[]): Promise<void> {
  await db.$executeRaw`
    INSERT INTO receiver_replicas (id, hostname, pid, started_at, seen_at, key_ids)
    VALUES (${replica.id}, ${replica.hostname}, ${replica.pid}, ${replica.startedAt}, now(), ${keyIds}::text[])
    ON CONFLICT (id) DO UPDATE SET seen_at = now(), key_ids = EXCLUDED.key_ids`;
  // Rows of replicas long gone are of no use to anyone.
  await db.$executeRaw`DELETE FROM receiver_replicas WHERE seen_at < now() - interval '1 day'`;
}

export async function forgetReplica(db: Database, id: string): Promise<void> {
  await db.$executeRaw`DELETE FROM receiver_replicas WHERE id = ${id}`;
}

export interface RunningReplica {
  id: string;
  keyIds: string[];
  seenAt: Date;
}

export async function runningReplicas(db: Database): Promise<RunningReplica[]> {
  return db.$queryRaw<RunningReplica[]>`
    SELECT id, key_ids AS "keyIds", seen_at AS "seenAt" FROM receiver_replicas
    WHERE seen_at > now() - make_interval(secs => ${REPLICA_GONE_AFTER_SECONDS}) ORDER BY id`;
}
