import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from '../generated/prisma/client.js';

export type Database = PrismaClient;

export interface DatabaseOptions {
  url: string;
  poolSize: number;
  /** How long to wait for a connection before failing, so a dead database gives a fast 503. */
  connectTimeoutMs: number;
}

/** One client per process: created in main.ts, passed down, disconnected on shutdown. */
export function createDatabase({ url, poolSize, connectTimeoutMs }: DatabaseOptions): Database {
  const adapter = new PrismaPg({
    connectionString: url,
    max: poolSize,
    connectionTimeoutMillis: connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    // A TCP connection that stops answering is noticed instead of hanging a request.
    keepAlive: true,
  });
  return new PrismaClient({ adapter });
}
