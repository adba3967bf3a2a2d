import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from '../generated/prisma/client.js';

export type Database = PrismaClient;

export interface DatabaseOptions {
  url: string;
  poolSize: number;
  /** How long to wait for a connection before failing, so a dead database gives a fast 503. */
  connectTimeoutMs: number;
  /**
   * How long one query may take before its connection is given up. A connection that goes silent
   * (a half-open TCP link) would otherwise hold its pool slot for many minutes after the database is back.
   */
  queryTimeoutMs?: number;
}

/** One client per process: created in main.ts, passed down, disconnected on shutdown. */
export function createDatabase({ url, poolSize, connectTimeoutMs, queryTimeoutMs = 15_000 }: DatabaseOptions): Database {
  const adapter = new PrismaPg({
    connectionString: url,
    max: poolSize,
    connectionTimeoutMillis: connectTimeoutMs,
    query_timeout: queryTimeoutMs,
    idleTimeoutMillis: 30_000,
    // A TCP connection that stops answering is noticed instead of hanging a request.
    keepAlive: true,
  });
  return new PrismaClient({ adapter });
}
