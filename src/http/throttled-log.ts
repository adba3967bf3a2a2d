import type { FastifyBaseLogger } from 'fastify';

// Lines a client can cause at will (a flood of bad signatures, unknown source ids, malformed
// requests) are written at most once per interval per key, with the number suppressed since the
// last line: the log stays readable and its volume bounded whatever a client sends. What is counted
// (metrics, a source's health) is still counted for every request.

export interface ThrottledLog {
  /** Writes the line now, or counts it in the next line for `key`. */
  write(level: 'info' | 'warn' | 'error', key: string, fields: Record<string, unknown>, msg: string): void;
}

interface Slot {
  lastAt: number;
  suppressed: number;
}

export function createThrottledLog(log: FastifyBaseLogger, { intervalMs = 1000, maxKeys = 10_000, now = Date.now } = {}): ThrottledLog {
  const slots = new Map<string, Slot>();

  /** Keys come from sources and reasons, which are bounded; old ones are dropped all the same. */
  function forgetOld(at: number): void {
    for (const [key, slot] of slots) if (at - slot.lastAt >= intervalMs && slot.suppressed === 0) slots.delete(key);
  }

  return {
    write(level, key, fields, msg) {
      const at = now();
      const slot = slots.get(key);
      if (slot && at - slot.lastAt < intervalMs) {
        slot.suppressed += 1;
        return;
      }
      if (!slot && slots.size >= maxKeys) forgetOld(at);
      const suppressed = slot?.suppressed ?? 0;
      slots.set(key, { lastAt: at, suppressed: 0 });
      log[level]({ ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, msg);
    },
  };
}
