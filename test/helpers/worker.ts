import type { FastifyBaseLogger } from 'fastify';
import { createDownloadAgent } from '../../src/downloads/guarded-fetch.js';
import { createDownloadQueue } from '../../src/downloads/queue.js';
import { createDownloadWorker, type DownloadWorker } from '../../src/downloads/worker.js';
import { parseHostPatterns } from '../../src/downloads/url-policy.js';
import type { Database } from '../../src/db/client.js';
import { createStorage, type StorageKind } from '../../src/storage/pdf-storage.js';

export interface TestWorkerOptions {
  db: Database;
  log: FastifyBaseLogger;
  workerId?: string;
  allowPrivateAddresses?: boolean;
  hosts?: string;
  timeoutMs?: number;
  maxBytes?: number;
  leaseSeconds?: number;
  concurrency?: number;
  retryBaseMs?: number;
  storage?: StorageKind;
  pdfDir?: string;
}

/** A worker wired as in production, against the test file host on localhost. */
export function createTestWorker(options: TestWorkerOptions): { worker: DownloadWorker; close(): Promise<void> } {
  const allowPrivateAddresses = options.allowPrivateAddresses ?? true;
  const agent = createDownloadAgent({ allowPrivateAddresses });
  const worker = createDownloadWorker({
    queue: createDownloadQueue(options.db, options.workerId ?? 'test-worker', options.leaseSeconds ?? 60),
    storage: createStorage({ kind: options.storage ?? 'database', pdfDir: options.pdfDir ?? '/nonexistent' }, options.db),
    agent,
    policy: { allowedHosts: parseHostPatterns(options.hosts ?? 'localhost'), allowPrivateAddresses },
    timeoutMs: options.timeoutMs ?? 5000,
    maxBytes: options.maxBytes ?? 1024 * 1024,
    retryBaseMs: options.retryBaseMs ?? 1000,
    concurrency: options.concurrency ?? 4,
    log: options.log,
    pollIntervalMs: 50,
  });
  return {
    worker,
    async close() {
      await worker.stop(1000);
      await agent.close();
    },
  };
}
