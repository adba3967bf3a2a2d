import autocannon from 'autocannon';
import { createHmac, randomUUID } from 'node:crypto';
import { withCpu, type Child, type CpuUse } from './processes.js';

// The one load generator: autocannon owns the connections, and every request is a delivery built as the vendors build them (from their
// documents, not from the service's code), unique, and signed before the clock starts.

/** `key` identifies the stored row: Patiro's eventId, or the notice's unique patient_id. */
export type Delivery = { path: string; headers: Record<string, string>; body: Buffer; key: string };

// Deliveries built ahead of the clock (`prepare`), so that signing costs nothing while measuring; `next` builds one on the spot, counted
// in `builtLive`, if they ran out. With `reuse` it cycles through that many instead (for a target that stores nothing).
export function createPool(build: () => Delivery, reuse = 0) {
  let [ready, cursor] = [[] as (Delivery | undefined)[], 0];
  const pool = {
    builtLive: 0,
    prepare(count: number) {
      if (reuse > 0) return void (ready = ready.length > 0 ? ready : Array.from({ length: reuse }, build));
      [ready, cursor] = [[...ready.slice(cursor), ...Array.from({ length: count }, build)], 0];
    },
    next(): Delivery {
      if (reuse > 0) return ready[cursor++ % reuse]!;
      const delivery = ready[cursor] ?? ((pool.builtLive += 1), build());
      ready[cursor++] = undefined; // let it be collected
      return delivery;
    },
  };
  return pool;
}
export type RequestPool = ReturnType<typeof createPool>;

/** About 300 bytes of patient data; the database baselines store the same. */
export const patientData = (id: string) => ({ id, firstName: 'Alexandra', lastName: 'Bench-Marksdottir', dateOfBirth: '1984-07-21', email: 'alexandra.bench@example.org',
  phone: '+31 20 555 0134', address: { street: 'Prinsengracht 263', postalCode: '1016 GV', city: 'Amsterdam', country: 'NL' }, insurance: { company: 'Example Zorg', policyNumber: 'EZ-000123456' } });

/** A PatientUpdated event about a patient of its own, signed as README.md documents; Patiro's `timestamp` has 7 fractional digits and no offset. */
export const patiroDelivery = (secret: string, path = '/webhooks/patiro') => (): Delivery => {
  const now = new Date();
  const eventId = randomUUID();
  const timestamp = `${now.toISOString().slice(0, 23)}${String(Math.floor(Math.random() * 10_000)).padStart(4, '0')}`;
  const body = Buffer.from(JSON.stringify({ eventId, eventType: 'PatientUpdated', timestamp, data: patientData(`bench-${eventId}`) }));
  const signedAt = String(now.getTime());
  const signature = createHmac('sha256', secret).update(`${signedAt}:`).update(body).digest('hex');
  return { path, headers: { 'content-type': 'application/json', 'x-patiro-timestamp': signedAt, 'x-patiro-hmacsha256': signature }, body, key: eventId };
};

/** A program-ready notice as Physitrack's document describes it, with a patient_id of its own. */
export function physitrackDelivery(apiKey: string, fileUrl: (index: number) => string, runId: string): () => Delivery {
  let index = 0;
  return () => {
    const now = new Date().toISOString();
    const patientId = `bench-${runId}-${index}`;
    const body = Buffer.from(JSON.stringify({ api_key: apiKey, token: 'bench-practitioner-token', patient_id: patientId, file_url: fileUrl(index++),
      name: 'Knee Rehab Program', date: now.slice(0, 10), date_iso: now.replace(/\.\d{3}Z$/, 'Z'), updated: false }));
    return { path: '/webhooks/physitrack', headers: { 'content-type': 'application/json' }, body, key: patientId };
  };
}

export type Latency = { p50: number; p99: number; max: number };

export function percentiles(samples: number[]): Latency {
  const sorted = Float64Array.from(samples).sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN;
  return { p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? Number.NaN };
}

/** `refused`: the answers not 2xx, by status; `unanswered`: sent, never answered; `elapsedS`: to the last answer; `latency` (ms): over every answer. */
export type LoadResult = { answered: number; acked: number; refused: Map<number, number>; unanswered: number; elapsedS: number; latency: Latency; ackedKeys: string[]; builtLive: number };

/** How long in-flight deliveries may take to be answered after sending stops (the ack deadline is ≤ 2 s). */
const DRAIN_LIMIT_S = 5;
// Sends deliveries for `durationS` (or exactly `amount`), then switches the connections to GET /healthz and ends once every delivery sent
// has been answered: "acked" and "stored" then compare exactly, instead of losing whatever was in flight when autocannon hung up.
export function runLoad(spec: { baseUrl: string; connections: number; pool: RequestPool; durationS?: number; amount?: number; signal: AbortSignal }): Promise<LoadResult> {
  const [start, liveBefore, latencies, ackedKeys, refused] = [performance.now(), spec.pool.builtLive, [] as number[], [] as string[], new Map<number, number>()];
  const outstanding = new Set<string>();
  let [sent, lastAnswerAt, sending] = [0, start, true];
  let instance: autocannon.Instance | undefined;
  const finishIfDrained = () => void (!sending && outstanding.size === 0 && instance?.stop());
  const stopSending = () => {
    if (!sending) return;
    sending = false;
    setTimeout(() => instance?.stop(), DRAIN_LIMIT_S * 1000).unref();
    setImmediate(finishIfDrained);
  };
  const request: autocannon.Request = {
    setupRequest(req, context: { key?: string; t0?: number }) {
      if (!sending) return { ...req, method: 'GET', path: '/healthz', headers: {}, body: '' };
      const delivery = spec.pool.next();
      if (++sent === spec.amount) stopSending();
      outstanding.add(delivery.key);
      Object.assign(context, { key: delivery.key, t0: performance.now() });
      return { ...req, method: 'POST', path: delivery.path, headers: delivery.headers, body: delivery.body };
    },
    onResponse(status, _body, context: { key?: string; t0?: number }) {
      if (context.key === undefined || context.t0 === undefined) return; // a drain request
      lastAnswerAt = performance.now();
      latencies.push(lastAnswerAt - context.t0);
      outstanding.delete(context.key);
      if (status >= 200 && status < 300) ackedKeys.push(context.key);
      else refused.set(status, (refused.get(status) ?? 0) + 1);
      context.key = undefined;
      finishIfDrained();
    },
  };
  const windowS = spec.durationS ?? 600;
  setTimeout(stopSending, windowS * 1000).unref(); // a no-op once `amount` has been sent
  spec.signal.addEventListener('abort', stopSending, { once: true });
  return new Promise<LoadResult>((resolve, reject) => {
    // `duration` is a hard cap only; sampling often makes autocannon act on stop() promptly.
    instance = autocannon({ url: spec.baseUrl, connections: spec.connections, duration: windowS + DRAIN_LIMIT_S + 5, sampleInt: 100, timeout: 10, requests: [request] }, (err) => {
      spec.signal.removeEventListener('abort', stopSending);
      if (err || spec.signal.aborted) return reject(spec.signal.aborted ? (spec.signal.reason as Error) : err instanceof Error ? err : new Error(String(err)));
      resolve({ answered: latencies.length, acked: ackedKeys.length, refused, unanswered: outstanding.size, elapsedS: (lastAnswerAt - start) / 1000,
        latency: percentiles(latencies), ackedKeys, builtLive: spec.pool.builtLive - liveBefore });
    });
  });
}

export type LoadSettings = { connections: number; durationS: number; warmupS: number; signal: AbortSignal; postmaster: number | undefined };

/** An unmeasured warm-up (JIT, pools), whose rate sizes the deliveries prepared for the measured run with CPU accounting. */
export async function warmAndRun(target: Child, pool: RequestPool, s: LoadSettings, afterWarmUp?: () => Promise<void>): Promise<{ warm: LoadResult; load: LoadResult; cpu: CpuUse }> {
  const run = (durationS: number) => runLoad({ baseUrl: target.baseUrl, connections: s.connections, pool, durationS, signal: s.signal });
  pool.prepare(s.connections * 50);
  const warm = await run(s.warmupS);
  // The warm-up is slower than the run (JIT, pools still filling): prepare generously, but at most 400,000 (beyond, they are signed live and reported).
  pool.prepare(Math.min(400_000, Math.ceil(Math.max((2 * warm.answered) / Math.max(warm.elapsedS, 1e-3), 6000) * s.durationS)));
  await afterWarmUp?.();
  const { result: load, cpu } = await withCpu({ target: target.pid, postmaster: s.postmaster }, () => run(s.durationS));
  return { warm, load, cpu };
}
