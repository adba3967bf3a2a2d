import type { Cleanup } from './cleanup.js';
import type { DatabaseServer } from './database.js';
import type { FileHost } from './file-host.js';
import type { BenchOptions } from './options.js';
import type { PhaseSettings } from './phases.js';
import type { Secrets, StartService } from './service.js';
import type { BenchTls } from './tls.js';

/** What every group of phases shares: set up once by scripts/bench.ts, torn down by `cleanup`. */
export interface BenchContext {
  o: BenchOptions;
  s: PhaseSettings;
  cleanup: Cleanup;
  repoRoot: string;
  tmpDir: string;
  /** The run's timestamp, part of every database name and run id. */
  stamp: string;
  secrets: Secrets;
  server: DatabaseServer;
  tls: BenchTls;
  fileHost: FileHost;
  startService: StartService;
  /** A progress line on stderr. */
  say(message: string): void;
}
