import pg from 'pg';
import type { FastifyBaseLogger } from 'fastify';
import { PMS_CHANNEL } from '../db/notify.js';

// Long polls wait for news: every write a PMS imports sends a NOTIFY on PMS_CHANNEL as it commits.
// One LISTENing connection per API server wakes every waiting request; the requests then read the
// feed again. A lost connection is made again; meanwhile the waits fall back to their periodic
// check, so a dead listener slows answers down, never loses them.

export interface Wakeup {
  /** Resolves at the next notification, after `ms`, or when `signal` aborts, whichever is first. */
  wait(ms: number, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

export function createWakeup(databaseUrl: string, log: FastifyBaseLogger): Wakeup {
  const waiters = new Set<() => void>();
  let client: pg.Client | undefined;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let started = false;

  const wakeAll = () => {
    for (const wake of [...waiters]) wake();
  };
  const reconnectLater = () => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(() => void connect(), 2000);
    timer.unref();
  };
  const connect = async () => {
    if (closed) return;
    const next = new pg.Client({ connectionString: databaseUrl, keepAlive: true, connectionTimeoutMillis: 5000 });
    let lost = false;
    const lose = (err?: Error) => {
      if (lost || closed) return;
      lost = true;
      if (client === next) client = undefined;
      log.warn({ err }, 'lost the change feed listener; long polls check every second until it is back');
      void next.end().catch(() => undefined);
      reconnectLater();
    };
    next.on('error', lose);
    next.on('end', () => lose());
    next.on('notification', wakeAll);
    try {
      await next.connect();
      await next.query(`LISTEN ${PMS_CHANNEL}`);
      if (closed) await next.end();
      else client = next;
    } catch (err) {
      lose(err as Error);
    }
  };

  return {
    wait(ms, signal) {
      if (!started) {
        started = true;
        void connect();
      }
      return new Promise((resolve) => {
        if (signal?.aborted) return resolve();
        const done = () => {
          clearTimeout(t);
          waiters.delete(done);
          signal?.removeEventListener('abort', done);
          resolve();
        };
        const t = setTimeout(done, ms);
        waiters.add(done);
        signal?.addEventListener('abort', done, { once: true });
      });
    },
    async close() {
      closed = true;
      clearTimeout(timer);
      wakeAll();
      await client?.end().catch(() => undefined);
    },
  };
}
