import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { loggerOptions } from '../../src/logger.js';

export interface CapturedLogs {
  logger: Logger;
  lines: string[];
  /** Every captured line parsed as JSON. */
  entries(): Record<string, unknown>[];
}

/** A logger configured exactly as in production (redaction included), writing into memory. */
export function captureLogs(level = 'debug'): CapturedLogs {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const logger = pino(loggerOptions(level, false), stream);
  return { logger, lines, entries: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}
