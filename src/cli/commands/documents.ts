import { createHash, randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { createStorage, StorageError, type StoredPdf } from '../../storage/pdf-storage.js';
import { command, EXIT, parseId, toJson, UsageError, type CommandContext } from '../output.js';

interface ExportArgs {
  documentId?: bigint;
  deliveryId?: bigint;
  out?: string;
}

interface Copied {
  ok: boolean;
  sha256: string;
  sizeBytes: number;
}

/**
 * Hashes while copying and holds the last chunk back until the hash is known: a corrupt document
 * never reaches its destination complete, so even a consumer that ignores the exit code gets a
 * truncated (unreadable) PDF rather than a plausible one.
 */
async function copyVerified(stored: StoredPdf, write: (chunk: Buffer) => Promise<void>): Promise<Copied> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  let held: Buffer | undefined;
  for await (const chunk of stored.stream) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    hash.update(buffer);
    sizeBytes += buffer.length;
    if (sizeBytes > stored.sizeBytes) break; // already wrong; stop reading (this destroys the stream)
    if (held) await write(held);
    held = buffer;
  }
  const sha256 = hash.digest('hex');
  const ok = sha256 === stored.sha256 && sizeBytes === stored.sizeBytes;
  if (ok && held) await write(held);
  return { ok, sha256, sizeBytes };
}

/** Writes next to `out` under a temporary name and renames only a verified copy into place. */
async function exportToFile(stored: StoredPdf, out: string): Promise<Copied> {
  const target = path.resolve(out);
  const temp = path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString('hex')}.partial`);
  const handle = await open(temp, 'wx', 0o600); // patient data: readable by the operator only
  let copied: Copied | undefined;
  try {
    copied = await copyVerified(stored, async (chunk) => {
      for (let offset = 0; offset < chunk.length; ) offset += (await handle.write(chunk, offset)).bytesWritten;
    });
    if (copied.ok) await handle.sync();
  } finally {
    await handle.close();
    if (!copied?.ok) await rm(temp, { force: true });
  }
  if (copied.ok) await rename(temp, target);
  return copied;
}

function writeTo(stream: Writable): (chunk: Buffer) => Promise<void> {
  return (chunk) => new Promise((resolve, reject) => stream.write(chunk, (err) => (err ? reject(err) : resolve())));
}

async function documentOfDelivery(ctx: CommandContext, deliveryId: bigint): Promise<bigint | string> {
  const [row] = await ctx.db.$queryRawUnsafe<{ document_id: string | null; status: string }[]>(
    'SELECT document_id::text AS document_id, download_status AS status FROM physitrack_deliveries WHERE id = $1',
    deliveryId,
  );
  if (!row) return `No delivery ${deliveryId}.`;
  if (row.document_id === null) return `Delivery ${deliveryId} has no document (its download is ${row.status}).`;
  return BigInt(row.document_id);
}

const exportCommand = command<ExportArgs>({
  path: ['documents', 'export'],
  synopsis: 'ID | --delivery ID [--out FILE]',
  summary: "Write a stored PDF to FILE (or to stdout when it is not a terminal), verifying its sha256.",
  details: `  ID              the documents.id
  --delivery ID   the document of this Physitrack delivery instead
  --out FILE      write here (through a temporary file renamed on success; replaces FILE)
Without --out the PDF goes to stdout, which must be redirected or piped (never a terminal); the
summary then goes to stderr. On a hash or size mismatch nothing is left at FILE and it exits 1.
Reads filesystem documents from PDF_DIR, so run it with the service's configuration.`,
  options: { delivery: { type: 'string' }, out: { type: 'string' } },
  parse(values, positionals) {
    const delivery = values.delivery as string | undefined;
    if ((delivery === undefined) === (positionals[0] === undefined)) throw new UsageError('give either a document ID or --delivery ID');
    if (positionals.length > 1) throw new UsageError(`unexpected argument "${positionals[1]}"`);
    const out = values.out as string | undefined;
    if (out === '') throw new UsageError('--out needs a file name');
    return delivery === undefined
      ? { documentId: parseId(positionals[0], 'the document ID'), out }
      : { deliveryId: parseId(delivery, '--delivery'), out };
  },
  async run(ctx, args) {
    if (args.out === undefined && ctx.io.stdout.isTTY) {
      throw new UsageError('Refusing to write a PDF to a terminal: use --out FILE or redirect stdout.');
    }
    const id = args.documentId ?? (await documentOfDelivery(ctx, args.deliveryId!));
    if (typeof id === 'string') {
      ctx.io.stderr.write(`${id}\n`);
      return EXIT.notFound;
    }
    let stored: StoredPdf | undefined;
    try {
      stored = await createStorage(ctx.config.storage, ctx.db).open(id);
    } catch (err) {
      if (!(err instanceof StorageError)) throw err;
      ctx.io.stderr.write(`Document ${id} cannot be read: ${err.message}\n`);
      return EXIT.notFound;
    }
    if (!stored) {
      ctx.io.stderr.write(`No document ${id}.\n`);
      return EXIT.notFound;
    }
    const copied = args.out === undefined ? await copyVerified(stored, writeTo(ctx.io.stdout)) : await exportToFile(stored, args.out);
    const summary = { documentId: String(id), sha256: stored.sha256, sizeBytes: stored.sizeBytes, contentType: stored.contentType, out: args.out ?? null };
    // With the PDF on stdout, anything else goes to stderr.
    const report = args.out === undefined ? ctx.io.stderr : ctx.io.stdout;
    if (!copied.ok) {
      const problem = `Document ${id} failed verification: expected sha256 ${stored.sha256} (${stored.sizeBytes} bytes), read ${copied.sha256} (${copied.sizeBytes} bytes).`;
      ctx.io.stderr.write(`${problem} ${args.out === undefined ? 'The output is incomplete: discard it.' : `Nothing was written to ${args.out}.`}\n`);
      if (ctx.json) report.write(`${toJson({ ...summary, ok: false, readSha256: copied.sha256, readSizeBytes: copied.sizeBytes })}\n`);
      return EXIT.notFound;
    }
    if (ctx.json) report.write(`${toJson({ ...summary, ok: true })}\n`);
    else report.write(`Wrote document ${id} (${stored.sizeBytes} bytes, sha256 ${stored.sha256} verified)${args.out ? ` to ${args.out}` : ''}.\n`);
    return EXIT.ok;
  },
});

export const documentCommands = [exportCommand];
