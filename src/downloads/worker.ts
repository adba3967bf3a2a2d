import { attemptDownload, type AttemptDeps, type AttemptOutcome } from './attempt.js';

export interface WorkerOptions extends AttemptDeps {
  concurrency: number;
  /** How often to look for rows stored by other replicas (a local insert wakes the worker at once). */
  pollIntervalMs?: number;
  /** The longest pause after the database failed to answer a claim. */
  maxErrorBackoffMs?: number;
}

export interface DownloadWorker {
  start(): void;
  /** New work was stored in this process: claim now rather than at the next poll. */
  wake(): void;
  /** Claims what fits in the free slots and waits for those attempts (tests drive the worker with it). */
  runOnce(): Promise<AttemptOutcome[]>;
  /** Stops claiming, lets in-flight downloads finish within `graceMs`, then aborts and releases the rest. */
  stop(graceMs: number): Promise<void>;
}

export function createDownloadWorker(options: WorkerOptions): DownloadWorker {
  const { queue, concurrency, log } = options;
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  const maxErrorBackoffMs = options.maxErrorBackoffMs ?? 15_000;
  // Expiring reads every waiting row; once per poll interval is plenty for a deadline of hours,
  // and a burst of wakes (one per stored notice) must not repeat it back to back.
  let lastExpiredAt = 0;
  const inFlight = new Set<Promise<AttemptOutcome>>();
  const abort = new AbortController();
  let running = false;
  let loopDone: Promise<void> = Promise.resolve();
  let wakeUp: (() => void) | undefined;
  // A wake that arrives while the loop is busy must not be lost until the next poll.
  let wokenWhileBusy = false;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (wokenWhileBusy) {
        wokenWhileBusy = false;
        return resolve();
      }
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wakeUp = undefined;
        resolve();
      }
      wakeUp = done;
    });
  const wake = () => {
    if (wakeUp) wakeUp();
    else wokenWhileBusy = true;
  };

  /** Claims up to the free slots and starts each attempt; returns the started attempts. */
  async function claimAndStart(): Promise<Promise<AttemptOutcome>[]> {
    if (Date.now() - lastExpiredAt >= pollIntervalMs) {
      await queue.expireOverdue();
      lastExpiredAt = Date.now();
    }
    const free = concurrency - inFlight.size;
    if (free <= 0) return [];
    const claimed = await queue.claim(free);
    return claimed.map((delivery) => {
      const attempt = attemptDownload(delivery, options, abort.signal).catch((err: unknown) => {
        log.error({ err, deliveryId: String(delivery.id) }, 'download attempt crashed; the lease will expire and the row come due again');
        return 'lost' as const;
      });
      inFlight.add(attempt);
      void attempt.finally(() => {
        inFlight.delete(attempt);
        wake(); // a slot is free
      });
      return attempt;
    });
  }

  async function loop(): Promise<void> {
    let errorBackoffMs = 0;
    while (running) {
      try {
        const started = await claimAndStart();
        errorBackoffMs = 0;
        // A full claim may mean more is due; otherwise wait for a wake, a free slot or the poll.
        if (started.length === 0 || inFlight.size >= concurrency) await sleep(pollIntervalMs);
      } catch (err) {
        errorBackoffMs = Math.min(Math.max(errorBackoffMs * 2, 500), maxErrorBackoffMs);
        log.error({ err, retryInMs: errorBackoffMs }, 'could not claim downloads; the database may be unavailable');
        await sleep(errorBackoffMs);
      }
    }
  }

  return {
    start() {
      if (running) return;
      running = true;
      loopDone = loop();
    },
    wake,
    async runOnce() {
      return Promise.all(await claimAndStart());
    },
    async stop(graceMs) {
      running = false;
      wake();
      await loopDone;
      const settled = Promise.all(inFlight);
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise((resolve) => (timer = setTimeout(resolve, graceMs)));
      await Promise.race([settled, grace]);
      clearTimeout(timer);
      if (inFlight.size > 0) {
        log.info({ inFlight: inFlight.size }, 'downloads still running at shutdown; aborting and releasing them');
        abort.abort();
        await settled;
      }
    },
  };
}
