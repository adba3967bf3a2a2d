import type { FastifyBaseLogger } from 'fastify';
import type { Dispatcher } from 'undici';
import type { PdfStorage } from '../storage/pdf-storage.js';
import { DownloadError, downloadPdf } from './guarded-fetch.js';
import { retryDelayMs, type ClaimedDelivery, type DownloadQueue } from './queue.js';
import type { FileUrlPolicy } from './url-policy.js';

export interface AttemptDeps {
  queue: DownloadQueue;
  storage: PdfStorage;
  agent: Dispatcher;
  policy: FileUrlPolicy;
  timeoutMs: number;
  maxBytes: number;
  retryBaseMs: number;
  log: FastifyBaseLogger;
  /** Told about every finished attempt (metrics). */
  onAttempt?: (outcome: AttemptOutcome, seconds: number, sizeBytes: number) => void;
}

export type AttemptOutcome = 'done' | 'retry' | 'failed' | 'released' | 'lost';

function hostOf(url: string): string | null {
  try {
    return new URL(url).hostname;
  } catch {
    return null;
  }
}

/**
 * One download attempt of one claimed delivery: fetch → store → report back to the queue.
 * Never throws; every failure is written to the row as a sentence a person can act on.
 * The URL is never logged: its path grants access to the PDF.
 */
export async function attemptDownload(delivery: ClaimedDelivery, deps: AttemptDeps, signal: AbortSignal): Promise<AttemptOutcome> {
  const started = Date.now();
  let sizeBytes = 0;
  const outcome = await attemptOnce(delivery, deps, signal, (bytes) => (sizeBytes = bytes));
  deps.onAttempt?.(outcome, (Date.now() - started) / 1000, sizeBytes);
  return outcome;
}

/**
 * Holds the lease while the attempt downloads and stores: a heartbeat every third of the lease, so
 * a beat or two may fail (a slow database) before it runs out. A beat that finds the claim's token
 * gone means the row was claimed again: `lost` aborts the download, and the attempt reports nothing.
 */
function keepLease(delivery: ClaimedDelivery, queue: DownloadQueue, log: FastifyBaseLogger): { lost: AbortSignal; stop(): Promise<void> } {
  const lost = new AbortController();
  const intervalMs = (queue.leaseSeconds * 1000) / 3;
  let stopped = false;
  let beat: Promise<void> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  function schedule(): void {
    timer = setTimeout(() => {
      beat = renew();
    }, intervalMs);
  }
  async function renew(): Promise<void> {
    try {
      if (!(await queue.heartbeat(delivery))) {
        lost.abort();
        return;
      }
    } catch (err) {
      log.warn({ err }, 'could not renew the lease; will try again');
    }
    if (!stopped) schedule();
  }
  schedule();
  return {
    lost: lost.signal,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await beat;
    },
  };
}

async function attemptOnce(delivery: ClaimedDelivery, deps: AttemptDeps, signal: AbortSignal, stored: (bytes: number) => void): Promise<AttemptOutcome> {
  const log = deps.log.child({ deliveryId: String(delivery.id), attempt: delivery.attempts, host: hostOf(delivery.fileUrl) });
  const started = Date.now();
  const pending = await deps.storage.begin().catch((err: unknown) => err as Error);
  if (pending instanceof Error) return retry(delivery, deps, log, pending, null);
  const lease = keepLease(delivery, deps.queue, log);
  try {
    const result = await downloadPdf({
      url: delivery.fileUrl,
      agent: deps.agent,
      policy: deps.policy,
      timeoutMs: deps.timeoutMs,
      maxBytes: deps.maxBytes,
      sink: pending,
      signal: AbortSignal.any([signal, lease.lost]),
    });
    const { documentId, deduplicated } = await pending.commit({ sha256: result.sha256, sizeBytes: result.sizeBytes, contentType: result.contentType ?? 'application/pdf' });
    // Renewing stops before the report; the report is conditional on the token, so a lease lost meanwhile makes it a no-op.
    await lease.stop();
    if (lease.lost.aborted) return lost(log);
    const owned = await deps.queue.markDone(delivery, documentId);
    stored(result.sizeBytes);
    log.info({ durationMs: Date.now() - started, sizeBytes: result.sizeBytes, documentId: String(documentId), deduplicated, status: 200 }, 'pdf downloaded and stored');
    if (owned) return 'done';
    // Erased meanwhile (a patient's erasure): a PDF stored for this delivery alone must not outlive
    // it. (A row claimed again by another worker is left alone: that one may store the same PDF.)
    if (!deduplicated && !(await deps.queue.exists(delivery))) {
      await deps.storage.forget(documentId).catch((forgetErr: unknown) => log.warn({ err: forgetErr }, 'could not remove the PDF of a delivery that was erased'));
    }
    return lost(log);
  } catch (err) {
    await lease.stop();
    await pending.discard();
    if (lease.lost.aborted) return lost(log);
    if (signal.aborted) {
      await deps.queue.release(delivery).catch((releaseErr: unknown) => log.warn({ err: releaseErr }, 'could not release the delivery; its lease will expire'));
      log.info({ durationMs: Date.now() - started }, 'download interrupted by shutdown; released for another attempt');
      return 'released';
    }
    const httpStatus = err instanceof DownloadError ? (err.httpStatus ?? null) : null;
    if (err instanceof DownloadError && err.permanent) {
      log.warn({ durationMs: Date.now() - started, code: err.code, status: httpStatus, reason: err.message }, 'download failed permanently');
      return (await deps.queue.markFailed(delivery, err.message, httpStatus)) ? 'failed' : lost(log);
    }
    return retry(delivery, deps, log, err as Error, httpStatus, started);
  }
}

async function retry(delivery: ClaimedDelivery, deps: AttemptDeps, log: FastifyBaseLogger, err: Error, httpStatus: number | null, started = Date.now()): Promise<AttemptOutcome> {
  const delayMs = retryDelayMs(delivery.attempts, deps.retryBaseMs);
  // Storage and database errors are ours, not the sender's; say so without internals.
  const reason = err instanceof DownloadError ? err.message : 'Storing the PDF failed on our side; it will be tried again.';
  const code = err instanceof DownloadError ? err.code : err.name;
  log.warn({ durationMs: Date.now() - started, code, status: httpStatus, reason, retryInMs: delayMs }, 'download attempt failed; will retry');
  const owned = await deps.queue.retryLater(delivery, reason, httpStatus, delayMs).catch((queueErr: unknown) => {
    log.error({ err: queueErr }, 'could not schedule the retry; the lease will expire and the row come due again');
    return true;
  });
  return owned ? 'retry' : lost(log);
}

function lost(log: FastifyBaseLogger): AttemptOutcome {
  log.warn('lost the lease on this delivery (its row was claimed again); nothing was recorded');
  return 'lost';
}
