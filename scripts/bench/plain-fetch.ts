import { Agent, request } from 'undici';

// The plain-fetch baseline, in its own process like the service: `concurrency` loops, each GETting
// the next file with undici and reading its body to the end. Prints one JSON line.
// Usage: node --import tsx scripts/bench/plain-fetch.ts <url prefix> <count> <concurrency>

const [prefix, countText, concurrencyText] = process.argv.slice(2);
const count = Number(countText);
const concurrency = Number(concurrencyText);
if (!prefix || !(count > 0) || !(concurrency > 0)) {
  process.stderr.write('usage: plain-fetch.ts <url prefix> <count> <concurrency>\n');
  process.exit(2);
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
      for await (const chunk of response.body as AsyncIterable<Buffer>) bytes += chunk.length;
    }
  }),
);
const elapsedS = (performance.now() - start) / 1000;
await agent.close();
process.stdout.write(`${JSON.stringify({ files: count, bytes, elapsedS })}\n`);
