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

async function attemptOnce(delivery: ClaimedDelivery, deps: AttemptDeps, signal: AbortSignal, stored: (bytes: number) => void): Promise<AttemptOutcome> {
  const log = deps.log.child({ deliveryId: String(delivery.id), attempt: delivery.attempts, host: hostOf(delivery.fileUrl) });
  const started = Date.now();
  const pending = await deps.storage.begin().catch((err: unknown) => err as Error);
  if (pending instanceof Error) return retry(delivery, deps, log, pending, null);
  try {
    const result = await downloadPdf({
      url: delivery.fileUrl,
      agent: deps.agent,
      policy: deps.policy,
      timeoutMs: deps.timeoutMs,
      maxBytes: deps.maxBytes,
      sink: pending,
      signal,
    });
    const { documentId, deduplicated } = await pending.commit({ sha256: result.sha256, sizeBytes: result.sizeBytes, contentType: result.contentType ?? 'application/pdf' });
    const owned = await deps.queue.markDone(delivery.id, documentId);
    stored(result.sizeBytes);
    log.info({ durationMs: Date.now() - started, sizeBytes: result.sizeBytes, documentId: String(documentId), deduplicated, status: 200 }, 'pdf downloaded and stored');
    return owned ? 'done' : lost(log);
  } catch (err) {
    await pending.discard();
    if (signal.aborted) {
      await deps.queue.release(delivery.id).catch((releaseErr: unknown) => log.warn({ err: releaseErr }, 'could not release the delivery; its lease will expire'));
      log.info({ durationMs: Date.now() - started }, 'download interrupted by shutdown; released for another attempt');
      return 'released';
    }
    const httpStatus = err instanceof DownloadError ? (err.httpStatus ?? null) : null;
    if (err instanceof DownloadError && err.permanent) {
      log.warn({ durationMs: Date.now() - started, code: err.code, status: httpStatus, reason: err.message }, 'download failed permanently');
      return (await deps.queue.markFailed(delivery.id, err.message, httpStatus)) ? 'failed' : lost(log);
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
  const owned = await deps.queue.retryLater(delivery.id, reason, httpStatus, delayMs).catch((queueErr: unknown) => {
    log.error({ err: queueErr }, 'could not schedule the retry; the lease will expire and the row come due again');
    return true;
  });
  return owned ? 'retry' : lost(log);
}

function lost(log: FastifyBaseLogger): AttemptOutcome {
  log.warn('the lease on this delivery ran out and another worker has it; this result was not recorded');
  return 'lost';
}
