import { createHmac, randomUUID } from 'node:crypto';

// The deliveries the load phases send, built as the vendors build them (from their documents, not
// from the service's code): unique per request, and signed before the clock starts.

export interface PreparedRequest {
  method: 'POST';
  path: string;
  headers: Record<string, string>;
  body: Buffer;
  /** What identifies the stored row: Patiro's eventId, or the notice's unique patient_id. */
  key: string;
}

export interface RequestPool {
  /** Builds `count` more requests now, so that building them costs nothing while measuring. */
  prepare(count: number): void;
  /** The next unused request; built on the spot (and counted) if the prepared ones ran out. */
  next(): PreparedRequest;
  /** Requests handed out so far, and how many of them had to be built during the run. */
  stats(): { used: number; builtLive: number };
}

/**
 * `reuse: n`: a fixed set of n requests handed out round and round instead of unique ones (for a
 * target that stores nothing, where a huge set would only make the load generator collect garbage).
 */
export function createPool(build: () => PreparedRequest, { reuse = 0 } = {}): RequestPool {
  const ready: PreparedRequest[] = [];
  let cursor = 0;
  let used = 0;
  let builtLive = 0;
  return {
    prepare(count) {
      if (reuse > 0) {
        while (ready.length < reuse) ready.push(build());
        return;
      }
      // Hand out what is already built first; drop the consumed prefix to free memory.
      ready.splice(0, cursor);
      cursor = 0;
      for (let i = 0; i < count; i++) ready.push(build());
    },
    next() {
      used += 1;
      if (reuse > 0 && ready.length > 0) {
        cursor %= ready.length;
        return ready[cursor++]!;
      }
      const request = ready[cursor];
      if (request === undefined) {
        builtLive += 1;
        return build();
      }
      ready[cursor] = undefined as unknown as PreparedRequest; // let it be collected
      cursor += 1;
      return request;
    },
    stats: () => ({ used, builtLive }),
  };
}

/** Patiro's timestamp format: local-looking ISO with 7 fractional digits and no offset. */
function patiroTimestamp(now: Date): string {
  return `${now.toISOString().slice(0, 23)}${String(Math.floor(Math.random() * 10_000)).padStart(4, '0')}`;
}

/**
 * A PatientUpdated event about a patient of its own (one row per event in both tables, as the
 * database-limit phase writes them), signed as README.md documents:
 * hex(HMAC-SHA256(secret, "<x-patiro-timestamp>:<raw body>")).
 */
export function patiroRequestBuilder(secret: string, path = '/webhooks/patiro'): () => PreparedRequest {
  return () => {
    const now = new Date();
    const eventId = randomUUID();
    const body = Buffer.from(
      JSON.stringify({
        eventId,
        eventType: 'PatientUpdated',
        timestamp: patiroTimestamp(now),
        data: patientData(`bench-${eventId}`),
      }),
    );
    const timestamp = String(now.getTime());
    const signature = createHmac('sha256', secret).update(`${timestamp}:`).update(body).digest('hex');
    return {
      method: 'POST',
      path,
      headers: { 'content-type': 'application/json', 'x-patiro-timestamp': timestamp, 'x-patiro-hmacsha256': signature },
      body,
      key: eventId,
    };
  };
}

/** About 300 bytes of patient data; the database-limit phase stores the same shape. */
export function patientData(id: string): Record<string, unknown> {
  return {
    id,
    firstName: 'Alexandra',
    lastName: 'Bench-Marksdottir',
    dateOfBirth: '1984-07-21',
    email: 'alexandra.bench@example.org',
    phone: '+31 20 555 0134',
    address: { street: 'Prinsengracht 263', postalCode: '1016 GV', city: 'Amsterdam', country: 'NL' },
    insurance: { company: 'Example Zorg', policyNumber: 'EZ-000123456' },
  };
}

/** A program-ready notice as Physitrack's document describes it, with a patient_id of its own. */
export function physitrackRequestBuilder(apiKey: string, fileUrl: (index: number) => string, runId: string): () => PreparedRequest {
  let index = 0;
  return () => {
    const now = new Date();
    const patientId = `bench-${runId}-${index}`;
    const body = Buffer.from(
      JSON.stringify({
        api_key: apiKey,
        token: 'bench-practitioner-token',
        patient_id: patientId,
        file_url: fileUrl(index),
        name: 'Knee Rehab Program',
        date: now.toISOString().slice(0, 10),
        date_iso: now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
        updated: false,
      }),
    );
    index += 1;
    return { method: 'POST', path: '/webhooks/physitrack', headers: { 'content-type': 'application/json' }, body, key: patientId };
  };
}
