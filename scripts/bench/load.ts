import autocannon from 'autocannon';
import type { RequestPool } from './deliveries.js';

export interface LoadSpec {
  baseUrl: string;
  connections: number;
  pool: RequestPool;
  /** Send deliveries for this long… */
  durationS?: number;
  /** …or exactly this many. */
  amount?: number;
  signal: AbortSignal;
}

export interface Latency {
  p50: number;
  p99: number;
  max: number;
}

export interface LoadResult {
  sent: number;
  answered: number;
  acked: number;
  /** Answered, but not 2xx, by status. */
  refused: Map<number, number>;
  /** Sent, but never answered: connection errors or timeouts. */
  unanswered: number;
  connectionErrors: number;
  /** From the start to the last answer to a delivery. */
  elapsedS: number;
  /** Over every answered delivery, in milliseconds. */
  latency: Latency;
  ackedKeys: string[];
  /** Deliveries built during the run because the prepared ones ran out. */
  builtLive: number;
}

interface Context {
  key?: string;
  t0?: number;
}

export function percentiles(samples: Float64Array): Latency {
  if (samples.length === 0) return { p50: Number.NaN, p99: Number.NaN, max: Number.NaN };
  const sorted = samples.slice().sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
  return { p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? Number.NaN };
}

/** How long in-flight deliveries may take to be answered after sending stops (the ack deadline is ≤ 2 s). */
const DRAIN_LIMIT_MS = 5_000;

/**
 * Drives autocannon with one unique, pre-built delivery per request (autocannon only owns the
 * connections). When the sending window closes, the clients switch to GET /healthz and the run
 * ends once every delivery sent has been answered, so "acked" and "stored" can be compared exactly
 * instead of losing whatever was in flight when autocannon hung up.
 */
export function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const liveBefore = spec.pool.stats().builtLive;
  const start = performance.now();
  const latencies: number[] = [];
  const ackedKeys: string[] = [];
  const refused = new Map<number, number>();
  const outstanding = new Set<string>();
  let sent = 0;
  let answered = 0;
  let connectionErrors = 0;
  let lastAnswerAt = start;
  let sending = true;
  let instance: autocannon.Instance | undefined;
  let drainTimer: NodeJS.Timeout | undefined;

  const finishIfDrained = () => {
    if (!sending && outstanding.size === 0) instance?.stop();
  };
  const stopSending = () => {
    if (!sending) return;
    sending = false;
    drainTimer = setTimeout(() => instance?.stop(), DRAIN_LIMIT_MS);
    setImmediate(finishIfDrained);
  };

  const request: autocannon.Request = {
    setupRequest(req, context) {
      const ctx = context as Context;
      if (!sending) return { ...req, method: 'GET', path: '/healthz', headers: {}, body: '' };
      const delivery = spec.pool.next();
      sent += 1;
      if (spec.amount !== undefined && sent >= spec.amount) stopSending();
      outstanding.add(delivery.key);
      ctx.key = delivery.key;
      ctx.t0 = performance.now();
      return { ...req, method: delivery.method, path: delivery.path, headers: delivery.headers, body: delivery.body };
    },
    onResponse(status, _body, context) {
      const ctx = context as Context;
      if (ctx.key === undefined || ctx.t0 === undefined) return; // a drain request
      const now = performance.now();
      latencies.push(now - ctx.t0);
      answered += 1;
      lastAnswerAt = now;
      outstanding.delete(ctx.key);
      if (status >= 200 && status < 300) ackedKeys.push(ctx.key);
      else refused.set(status, (refused.get(status) ?? 0) + 1);
      ctx.key = undefined;
      finishIfDrained();
    },
  };

  const windowS = spec.durationS ?? 600;
  const windowTimer = setTimeout(stopSending, windowS * 1000);
  const onAbort = () => stopSending();
  spec.signal.addEventListener('abort', onAbort, { once: true });

  return new Promise<LoadResult>((resolve, reject) => {
    instance = autocannon(
      {
        url: spec.baseUrl,
        connections: spec.connections,
        pipelining: 1,
        // A hard cap only: the run normally ends earlier, when the last delivery is answered.
        duration: windowS + DRAIN_LIMIT_MS / 1000 + 5,
        // autocannon acts on stop() at its next sample tick; sample often so the drain ends promptly.
        sampleInt: 100,
        timeout: 10,
        requests: [request],
      },
      (err) => {
        clearTimeout(windowTimer);
        clearTimeout(drainTimer);
        spec.signal.removeEventListener('abort', onAbort);
        if (err) return reject(err instanceof Error ? err : new Error(String(err)));
        if (spec.signal.aborted) return reject(spec.signal.reason as Error);
        resolve({
          sent,
          answered,
          acked: ackedKeys.length,
          refused,
          unanswered: outstanding.size,
          connectionErrors,
          elapsedS: (lastAnswerAt - start) / 1000,
          latency: percentiles(Float64Array.from(latencies)),
          ackedKeys,
          builtLive: spec.pool.stats().builtLive - liveBefore,
        });
      },
    );
    instance.on('reqError', () => void (connectionErrors += 1));
  });
}
