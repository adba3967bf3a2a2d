import { crc32 } from 'node:zlib';
import type { NewDelivery } from '../downloads/intake.js';
import type { Vendor } from '../metrics.js';
import type { PatiroEvent } from '../webhooks/patiro-payload.js';
import type { PatiroDelivery } from '../webhooks/patiro-store.js';
import type { PhysitrackNotice } from '../webhooks/physitrack-payload.js';

// What the spool keeps of a delivery: what its write needs, and nothing that authenticates. A
// Patiro record holds the validated event and its signed time, never the signature, the signing
// secret, a ?token= or a basic-auth password; a Physitrack record holds the validated notice, which
// has no api_key. One record is one line: its CRC-32 in hex, a space, and its JSON, so a torn or
// altered record is found and set aside, never replayed half.

export type SpooledDelivery = { vendor: 'patiro'; delivery: PatiroDelivery } | { vendor: 'physitrack'; delivery: NewDelivery };

const VERSION = 1;

interface Common {
  v: number;
  vendor: Vendor;
  receiptId: string;
  receivedAt: string;
  sourceId: string;
  sourceAddress: string | null;
  bodySha256: string;
}

type PatiroRecord = Common & { vendor: 'patiro'; signedAt: string; event: PatiroEvent };
type PhysitrackRecord = Common & { vendor: 'physitrack'; notice: PhysitrackNotice; refusal: string | null; deadlineHours: number };

function toRecord({ vendor, delivery }: SpooledDelivery): PatiroRecord | PhysitrackRecord {
  const common = {
    v: VERSION,
    receiptId: delivery.receipt.id,
    receivedAt: delivery.receipt.receivedAt.toISOString(),
    sourceId: delivery.sourceId,
    sourceAddress: delivery.sourceAddress,
    bodySha256: delivery.bodySha256,
  };
  if (vendor === 'patiro') return { ...common, vendor, signedAt: delivery.signedAt.toISOString(), event: delivery.event };
  return { ...common, vendor, notice: delivery.notice, refusal: delivery.refusal, deadlineHours: delivery.deadlineHours };
}

function withDataJson({ data, ...rest }: Omit<PatiroEvent, 'dataJson'> & { data?: unknown }): PatiroEvent {
  return { ...rest, dataJson: data === undefined || data === null ? null : JSON.stringify(data) };
}

const hex = (n: number) => n.toString(16).padStart(8, '0');

/** One line, newline included. JSON escapes every newline inside strings, so a line is a record. */
export function encodeRecord(spooled: SpooledDelivery): Buffer {
  const json = Buffer.from(JSON.stringify(toRecord(spooled)), 'utf8');
  return Buffer.concat([Buffer.from(`${hex(crc32(json))} `), json, Buffer.from('\n')]);
}

export class CorruptRecordError extends Error {
  override readonly name = 'CorruptRecordError';
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isInstant = (v: unknown): v is string => isString(v) && !Number.isNaN(Date.parse(v));

/** Checks the line's CRC, then the record's shape; throws CorruptRecordError on either. */
export function decodeRecord(line: Buffer): SpooledDelivery {
  const space = line.indexOf(0x20);
  if (space !== 8) throw new CorruptRecordError('the record has no checksum');
  const json = line.subarray(9);
  if (line.subarray(0, 8).toString('latin1') !== hex(crc32(json))) throw new CorruptRecordError('the record fails its checksum');
  let r: Partial<Omit<PatiroRecord, 'vendor'> & Omit<PhysitrackRecord, 'vendor'>> & { vendor?: unknown };
  try {
    r = JSON.parse(json.toString('utf8')) as typeof r;
  } catch {
    throw new CorruptRecordError('the record is not JSON');
  }
  const commonOk = r.v === VERSION && isString(r.receiptId) && isInstant(r.receivedAt) && isString(r.sourceId) && isString(r.bodySha256);
  if (!commonOk || (r.sourceAddress !== null && !isString(r.sourceAddress))) throw new CorruptRecordError('the record has an unknown shape');
  const common = {
    receipt: { id: r.receiptId!, receivedAt: new Date(r.receivedAt!) },
    sourceId: r.sourceId!,
    sourceAddress: r.sourceAddress ?? null,
    bodySha256: r.bodySha256!,
  };
  if (r.vendor === 'patiro' && isInstant(r.signedAt) && typeof r.event === 'object' && r.event !== null && isString(r.event.eventId)) {
    const event = r.event as PatiroEvent & { data?: unknown };
    // Records spooled by a build that kept data parsed (before dataJson): its text, as it was kept.
    if (!('dataJson' in event)) return { vendor: 'patiro', delivery: { ...common, signedAt: new Date(r.signedAt), event: withDataJson(event) } };
    return { vendor: 'patiro', delivery: { ...common, signedAt: new Date(r.signedAt), event } };
  }
  if (r.vendor === 'physitrack' && typeof r.notice === 'object' && r.notice !== null && isString(r.notice.fileUrl) && typeof r.deadlineHours === 'number') {
    return { vendor: 'physitrack', delivery: { ...common, notice: r.notice, refusal: r.refusal ?? null, deadlineHours: r.deadlineHours } };
  }
  throw new CorruptRecordError('the record has an unknown shape');
}
