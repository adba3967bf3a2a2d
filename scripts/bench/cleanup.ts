/**
 * Everything the benchmark starts registers how to undo it here. The steps run last-in first-out,
 * once, each bounded in time, whether the run ends normally, fails, or is interrupted (Ctrl-C).
 */
export interface Cleanup {
  add(name: string, step: () => Promise<unknown> | void, timeoutMs?: number): void;
  /** Runs every step still registered; later calls return the same promise. */
  run(): Promise<void>;
  /** Aborted by Ctrl-C or SIGTERM, so a running phase can stop early. */
  readonly signal: AbortSignal;
}

interface Step {
  name: string;
  step: () => Promise<unknown> | void;
  timeoutMs: number;
}

async function bounded(step: Step): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      process.stderr.write(`cleanup: "${step.name}" took longer than ${step.timeoutMs} ms; moving on\n`);
      resolve();
    }, step.timeoutMs);
  });
  try {
    await Promise.race([Promise.resolve().then(step.step), timeout]);
  } catch (err) {
    process.stderr.write(`cleanup: "${step.name}" failed: ${err instanceof Error ? err.message : String(err)}\n`);
  } finally {
    clearTimeout(timer);
  }
}

export function createCleanup(): Cleanup {
  const steps: Step[] = [];
  const interrupted = new AbortController();
  let running: Promise<void> | undefined;

  const run = () => {
    running ??= (async () => {
      for (let step = steps.pop(); step; step = steps.pop()) await bounded(step);
    })();
    return running;
  };

  let firstSignalAt: number | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    // Ctrl-C reaches this process twice: from the terminal and relayed by the tsx wrapper.
    if (firstSignalAt !== undefined && Date.now() - firstSignalAt < 2000) return;
    if (firstSignalAt !== undefined) {
      process.stderr.write(`\n${signal} again: exiting without finishing the cleanup\n`);
      process.exit(130);
    }
    firstSignalAt = Date.now();
    process.stderr.write(`\n${signal}: stopping the benchmark and cleaning up (press Ctrl-C again to skip)\n`);
    interrupted.abort(new Error(`interrupted by ${signal}`));
    void run().then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  return {
    add(name, step, timeoutMs = 15_000) {
      steps.push({ name, step, timeoutMs });
    },
    run,
    signal: interrupted.signal,
  };
}

/** Resolves after `ms`, or rejects as soon as `signal` is aborted. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
