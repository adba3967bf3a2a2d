/** The deadline passed before the promise settled. */
export class DeadlineError extends Error {
  readonly code = 'WH_ERR_DEADLINE';
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = 'DeadlineError';
  }
}

/** Settles with `promise`, or rejects once `ms` have passed; a late rejection is swallowed, not left unhandled. */
export async function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(ms)), ms);
  });
  promise.catch(() => undefined); // a late rejection after the deadline must not go unhandled
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
