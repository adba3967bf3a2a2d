import pg from 'pg';
import { WebhookError } from '../errors.js';
import { withDeadline } from '../deadline.js';

/**
 * Runs the durable write within what is left of the ack deadline. Past it, or when the database
 * fails, the sender gets 503 with Retry-After and will deliver again; the write may still commit
 * late, which the idempotent upserts make harmless. A 2xx is never sent for an unconfirmed write.
 */
export async function storeWithinDeadline<T>(write: () => Promise<T>, remainingMs: number, onFailure: (statusCode: number) => void): Promise<T> {
  try {
    if (remainingMs <= 0) throw new Error('the ack deadline passed before the write started');
    return await withDeadline(write(), remainingMs);
  } catch (err) {
    const refusal = refusalOf(err);
    onFailure(refusal.statusCode);
    throw refusal;
  }
}

function refusalOf(err: unknown): WebhookError {
  // A data exception (SQLSTATE class 22) is this delivery's own: it would fail the same way on
  // every retry, so it is a 400 that says so, not a 503 that invites the retries.
  const code = (err as { code?: unknown }).code;
  if (err instanceof pg.DatabaseError && typeof code === 'string' && code.startsWith('22')) {
    return new WebhookError('WH_ERR_BAD_PAYLOAD', `PostgreSQL cannot store a value of this delivery (SQLSTATE ${code})`, { cause: err });
  }
  return new WebhookError('WH_ERR_UNAVAILABLE', undefined, { cause: err });
}
