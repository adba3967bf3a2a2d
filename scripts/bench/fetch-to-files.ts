import { open, rename } from 'node:fs/promises';
import path from 'node:path';
import { Agent, request } from 'undici';

// The PDF pipeline's durable baseline, in its own process like the service: `concurrency` loops, each GETting the next file with undici
// into a temp file, fsynced and renamed, then the directory fsynced (only then does the rename survive a power cut): what any downloader
// that keeps files durably pays. Usage: fetch-to-files.ts <url prefix> <count> <concurrency> <directory>; prints {files, elapsedS, cpuS}.

const [prefix, count, concurrency, dir] = process.argv.slice(2) as [string, string, string, string];
const agent = new Agent();
let next = 0;
const [start, cpuAtStart] = [performance.now(), process.cpuUsage()];
await Promise.all(Array.from({ length: Number(concurrency) }, async () => {
  for (let index = next++; index < Number(count); index = next++) {
    const response = await request(`${prefix}${index}.pdf`, { dispatcher: agent });
    if (response.statusCode !== 200) throw new Error(`file ${index}: HTTP ${response.statusCode}`);
    // The whole file in one write, the fewest system calls a plain downloader can make (the service writes 256 KiB runs).
    const bytes = Buffer.from(await response.body.arrayBuffer());
    const temp = path.join(dir, `${index}.pdf.partial`);
    const file = await open(temp, 'wx');
    await file.writeFile(bytes).then(() => file.sync()).finally(() => file.close());
    await rename(temp, path.join(dir, `${index}.pdf`));
    const directory = await open(dir, 'r');
    await directory.sync().finally(() => directory.close());
  }
}));
const [elapsedS, cpu] = [(performance.now() - start) / 1000, process.cpuUsage(cpuAtStart)];
await agent.close();
process.stdout.write(`${JSON.stringify({ files: Number(count), elapsedS, cpuS: (cpu.user + cpu.system) / 1e6 })}\n`);
