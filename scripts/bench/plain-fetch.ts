import { open, rename } from 'node:fs/promises';
import path from 'node:path';
import { Agent, request } from 'undici';

// The plain-fetch baselines, in their own process like the service: `concurrency` loops, each
// GETting the next file with undici and reading its body to the end. Prints one JSON line.
// Without a directory the bodies are discarded. With one, each body goes to a temp file there,
// which is fsynced and renamed to its final name, and the directory fsynced after the rename (only
// then does the rename survive a power cut): what any downloader that keeps files durably pays.
// Usage: node --import tsx scripts/bench/plain-fetch.ts <url prefix> <count> <concurrency> [<directory>]

const [prefix, countText, concurrencyText, intoDir] = process.argv.slice(2);
const count = Number(countText);
const concurrency = Number(concurrencyText);
if (!prefix || !(count > 0) || !(concurrency > 0)) {
  process.stderr.write('usage: plain-fetch.ts <url prefix> <count> <concurrency> [<directory>]\n');
  process.exit(2);
}

/** Chunks arrive as the network delivers them (often 16 KiB); written in runs, as the service does, to spare system calls. */
const WRITE_RUN_BYTES = 256 * 1024;

async function discard(body: AsyncIterable<Buffer>): Promise<number> {
  let bytes = 0;
  for await (const chunk of body) bytes += chunk.length;
  return bytes;
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function writeDurably(body: AsyncIterable<Buffer>, dir: string, name: string): Promise<number> {
  const tempPath = path.join(dir, `${name}.partial`);
  const handle = await open(tempPath, 'wx');
  let bytes = 0;
  try {
    let run: Buffer[] = [];
    let runBytes = 0;
    const flush = async () => {
      const { bytesWritten } = await handle.writev(run);
      if (bytesWritten !== runBytes) throw new Error(`${tempPath}: wrote ${bytesWritten} of ${runBytes} bytes`);
      run = [];
      runBytes = 0;
    };
    for await (const chunk of body) {
      run.push(chunk);
      runBytes += chunk.length;
      bytes += chunk.length;
      if (runBytes >= WRITE_RUN_BYTES) await flush();
    }
    if (runBytes > 0) await flush();
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tempPath, path.join(dir, name));
  await syncDirectory(dir);
  return bytes;
}

const agent = new Agent();
let next = 0;
let bytes = 0;
const start = performance.now();
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    for (let index = next++; index < count; index = next++) {
      const response = await request(`${prefix}${index}.pdf`, { dispatcher: agent });
      if (response.statusCode !== 200) {
        await response.body.dump();
        throw new Error(`file ${index}: HTTP ${response.statusCode}`);
      }
      const body = response.body as AsyncIterable<Buffer>;
      // Not `bytes += await …`: that reads `bytes` before the await and loses the other loops' additions.
      const received = intoDir ? await writeDurably(body, intoDir, `${index}.pdf`) : await discard(body);
      bytes += received;
    }
  }),
);
const elapsedS = (performance.now() - start) / 1000;
await agent.close();
process.stdout.write(`${JSON.stringify({ files: count, bytes, elapsedS })}\n`);
