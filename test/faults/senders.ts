import { Agent, request } from 'undici';
import { PATIRO_SECRET, patiroEvent } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice } from '../helpers/physitrack.js';
import { patiroSignature } from '../../src/webhooks/patiro-signature.js';

// Vendors as clients over real HTTP: every request's outcome (status or connection error) and latency.

export interface Outcome {
  /** The Patiro eventId, or a label for other requests. */
  id: string;
  /** Set by sendPatiro and sendPhysitrack: where it was sent. */
  vendor?: 'patiro' | 'physitrack';
  sourceId?: string;
  /** Patiro: the x-patiro-hmacsha256 sent (a secret-derived value that must never be stored). */
  signature?: string;
  status?: number;
  retryAfter?: string;
  /** Why there was no answer: ECONNREFUSED, UND_ERR_SOCKET, ECONNRESET, … */
  error?: string;
  startedAt: number;
  latencyMs: number;
}

export function createClient(): Agent {
  return new Agent({ connections: 32, headersTimeout: 15_000, bodyTimeout: 15_000, connect: { timeout: 5000 } });
}

async function post(agent: Agent, url: string, id: string, headers: Record<string, string>, body: string): Promise<Outcome> {
  const startedAt = Date.now();
  try {
    const response = await request(url, { dispatcher: agent, method: 'POST', headers, body });
    await response.body.dump();
    const retryAfter = response.headers['retry-after'];
    return {
      id,
      status: response.statusCode,
      ...(typeof retryAfter === 'string' ? { retryAfter } : {}),
      startedAt,
      latencyMs: Date.now() - startedAt,
    };
  } catch (err) {
    const e = err as { code?: string; name?: string; cause?: { code?: string } };
    return { id, error: e.code ?? e.cause?.code ?? e.name ?? 'unknown', startedAt, latencyMs: Date.now() - startedAt };
  }
}

export interface PatiroSendOptions {
  /** A table source's id; the environment's (default) source when absent. */
  sourceId?: string;
  /** The signing secret (default: the environment's, PATIRO_SECRET). */
  secret?: string;
  /** Sent as ?token=. */
  token?: string;
  /** `user:password`, sent as Authorization: Basic. */
  basicAuth?: string;
  /** The event (default: a new, uniquely identified one). */
  event?: Record<string, unknown>;
}

const sourcePath = (vendor: 'patiro' | 'physitrack', sourceId: string | undefined) => `/webhooks/${vendor}${sourceId === undefined ? '' : `/${sourceId}`}`;

/** A Patiro event signed now, with whatever else the source requires. */
export async function sendPatiro(agent: Agent, baseUrl: string, options: PatiroSendOptions = {}): Promise<Outcome> {
  const event = options.event ?? patiroEvent();
  const body = JSON.stringify(event);
  const timestamp = String(Date.now());
  const signature = patiroSignature(options.secret ?? PATIRO_SECRET, timestamp, Buffer.from(body));
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-patiro-timestamp': timestamp, 'x-patiro-hmacsha256': signature };
  if (options.basicAuth !== undefined) headers.authorization = `Basic ${Buffer.from(options.basicAuth).toString('base64')}`;
  const query = options.token === undefined ? '' : `?token=${encodeURIComponent(options.token)}`;
  const outcome = await post(agent, `${baseUrl}${sourcePath('patiro', options.sourceId)}${query}`, String(event.eventId), headers, body);
  return { ...outcome, vendor: 'patiro', sourceId: options.sourceId ?? 'default', signature };
}

/** A new, uniquely identified Patiro event to the default source, signed now. */
export async function sendPatiroEvent(agent: Agent, baseUrl: string): Promise<Outcome> {
  return sendPatiro(agent, baseUrl);
}

export interface PhysitrackSendOptions {
  /** A table source's id; the environment's (default) source when absent. */
  sourceId?: string;
  /** The api_key in the body (default: the environment's, PHYSITRACK_KEY). */
  apiKey?: string;
}

/** A Physitrack notice for `fileUrl`; the outcome's id is the file URL (the test's own secret). */
export async function sendPhysitrack(agent: Agent, baseUrl: string, fileUrl: string, options: PhysitrackSendOptions = {}): Promise<Outcome> {
  const body = JSON.stringify(physitrackNotice({ file_url: fileUrl, api_key: options.apiKey ?? PHYSITRACK_KEY }));
  const outcome = await post(agent, `${baseUrl}${sourcePath('physitrack', options.sourceId)}`, fileUrl, { 'content-type': 'application/json' }, body);
  return { ...outcome, vendor: 'physitrack', sourceId: options.sourceId ?? 'default' };
}

/** A Physitrack notice for `fileUrl` to the default source. */
export async function sendPhysitrackNotice(agent: Agent, baseUrl: string, fileUrl: string): Promise<Outcome> {
  return sendPhysitrack(agent, baseUrl, fileUrl);
}

export async function get(baseUrl: string, path: string): Promise<Outcome> {
  const startedAt = Date.now();
  try {
    const response = await fetch(`${baseUrl}${path}`, { signal: AbortSignal.timeout(10_000) });
    await response.arrayBuffer();
    return { id: path, status: response.status, startedAt, latencyMs: Date.now() - startedAt };
  } catch (err) {
    return { id: path, error: (err as Error).name, startedAt, latencyMs: Date.now() - startedAt };
  }
}

/** GET with its JSON body, for /readyz: `{ status: 0 }` when nothing answered. */
export async function getJson(baseUrl: string, path: string): Promise<{ status: number; body: Record<string, unknown> | undefined; latencyMs: number }> {
  const startedAt = Date.now();
  try {
    const response = await fetch(`${baseUrl}${path}`, { signal: AbortSignal.timeout(10_000) });
    const text = await response.text();
    let body: Record<string, unknown> | undefined;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = undefined;
    }
    return { status: response.status, body, latencyMs: Date.now() - startedAt };
  } catch {
    return { status: 0, body: undefined, latencyMs: Date.now() - startedAt };
  }
}

export interface LoadOptions {
  senders: number;
  send: () => Promise<Outcome>;
  /** Checked before each request. */
  stop: () => boolean;
  /** Bound per sender, whatever happens. */
  maxPerSender?: number;
}

/**
 * `senders` loops sending one request after another until `stop()`. After a connection error a
 * sender waits 20 ms before trying again, as a client pacing its retries would.
 */
export async function runLoad({ senders, send, stop, maxPerSender = 5000 }: LoadOptions): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  const sender = async () => {
    for (let i = 0; i < maxPerSender && !stop(); i++) {
      const outcome = await send();
      outcomes.push(outcome);
      if (outcome.error) await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  await Promise.all(Array.from({ length: senders }, sender));
  return outcomes;
}

export function summarise(outcomes: Outcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) {
    const key = o.status !== undefined ? String(o.status) : (o.error ?? 'unknown');
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

export const isAcknowledged = (o: Outcome) => o.status !== undefined && o.status >= 200 && o.status < 300;

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
}
