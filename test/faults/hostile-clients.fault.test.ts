import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { waitFor } from '../helpers/wait.js';
import { createClient, sendPatiroEvent } from './senders.js';
import { killAllServiceProcesses, startServiceProcess, type ServiceProcess } from './service-process.js';

// The attacks of issue 20 against the service as a real process, measured from outside: its
// resident memory (from /proc) while 10 connections pipeline 10,000 requests each and never read,
// and what 3,000 idle connections do to a service with MAX_CONNECTIONS=200.

let database: TestDatabase;
let service: ServiceProcess;
const client = createClient();

beforeAll(async () => {
  database = await createTestDatabase();
  service = await startServiceProcess({ databaseUrl: database.url, env: { MAX_CONNECTIONS: '200', REQUEST_TIMEOUT_MS: '3000', LOG_LEVEL: 'info' } });
  await service.waitReady();
});
afterAll(async () => {
  await killAllServiceProcesses();
  await client.close();
  await database?.drop();
});

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? 0) / 1024;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.on('error', reject);
  });
}

describe('hostile clients against the real process', () => {
  it('stays small and fast while 10 connections pipeline 10,000 requests each and never read', async () => {
    const before = await rssMiB(service.pid);
    const sockets = await Promise.all(Array.from({ length: 10 }, () => connect(service.options.port)));
    const ends = sockets.map((s) => new Promise((resolve) => s.on('close', resolve).on('error', () => undefined)));
    for (const [i, s] of sockets.entries()) {
      s.pause();
      s.write(`GET /${i % 2 ? 'metrics' : 'readyz'} HTTP/1.1\r\nHost: x\r\n\r\n`.repeat(10_000));
    }
    const latencies: number[] = [];
    for (let i = 0; i < 10; i++) {
      const outcome = await sendPatiroEvent(client, service.baseUrl);
      expect(outcome.status).toBe(204);
      latencies.push(outcome.latencyMs);
    }
    await Promise.race([Promise.all(ends), new Promise((resolve) => setTimeout(resolve, 5000))]);
    const after = await rssMiB(service.pid);
    const health = await fetch(`${service.baseUrl}/healthz`);
    for (const s of sockets) s.destroy();
    console.log(`[pipelining] RSS ${before.toFixed(0)} → ${after.toFixed(0)} MiB; deliveries meanwhile max ${Math.max(...latencies)} ms; /healthz ${health.status}`);
    expect(after - before).toBeLessThan(100);
    expect(Math.max(...latencies)).toBeLessThan(1500);
    expect(health.status).toBe(200);
  });

  it('refuses what is past MAX_CONNECTIONS, warns once, and serves again when the idle connections time out', async () => {
    const sockets: net.Socket[] = [];
    const ends: Promise<unknown>[] = [];
    for (let i = 0; i < 3000; i++) {
      const socket = await connect(service.options.port).catch(() => undefined);
      if (!socket) continue;
      ends.push(new Promise((resolve) => socket.on('close', resolve).on('error', () => undefined)));
      sockets.push(socket);
    }
    const during = await sendPatiroEvent(client, service.baseUrl);
    // The idle ones never sent a request: closed at REQUEST_TIMEOUT_MS.
    await Promise.race([Promise.all(ends), new Promise((resolve) => setTimeout(resolve, 8000))]);
    const open = sockets.filter((s) => !s.destroyed).length;
    for (const s of sockets) s.destroy();
    await waitFor(async () => (await sendPatiroEvent(client, service.baseUrl)).status === 204, 10_000, 200);
    const warnings = service.logEntries().filter((e) => String(e.msg).startsWith('MAX_CONNECTIONS connections are open'));
    console.log(`[connection flood] 3000 opened; a delivery during the flood: ${during.status ?? during.error}; still open after the timeout: ${open}; warnings logged: ${warnings.length}`);
    expect(open).toBe(0);
    expect(warnings).toHaveLength(1);
    expect(service.isRunning()).toBe(true);
  });
});
