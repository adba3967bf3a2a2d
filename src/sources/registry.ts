import type { FastifyBaseLogger } from 'fastify';
import pg from 'pg';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import type { Vendor } from '../metrics.js';
import { isPatiroConfigured } from '../webhooks/patiro-auth.js';
import { DEFAULT_SOURCE_ID, parseCredentials, type SecretEntry } from './credentials.js';
import type { CopiedSource, SourcesCopy } from '../spool/sources-copy.js';
import { recordReplica, type Replica } from './replicas.js';
import { createKeyring, keyIdOf } from './sealed.js';
import { readAllSources, recordDefaultSources, SOURCES_CHANNEL, type SourceStatus } from './sources-table.js';

/** One sender configuration as the ack path sees it: looked up in memory, never in the database. */
export interface Source {
  vendor: Vendor;
  id: string;
  name: string;
  status: SourceStatus;
  secrets: readonly SecretEntry[];
  /** Patiro: the required ?token= value. */
  token: string | null;
  /** Patiro, environment only: the required user:password. */
  basicAuth?: string | undefined;
  /** Physitrack, environment only: the practitioner tokens accepted (unset: any). */
  practitionerTokens?: readonly string[] | undefined;
  /** Set when its credentials could not be opened: its deliveries get 503 until that is fixed. */
  unreadable?: string;
}

/** `unknown`: the sources table has not been read yet and there is no local copy: nobody can tell. */
export type Lookup = { found: 'active' | 'disabled'; source: Source } | { found: 'none' } | { found: 'unknown' };

export interface SourceRegistry {
  lookup(vendor: Vendor, id: string): Lookup;
  /** Reads the table again; keeps what it has when that fails. */
  reload(): Promise<void>;
  /** Follows the control channel, so a CLI change takes effect at once, with a periodic reload as a safety net. */
  listen(databaseUrl: string): Promise<void>;
  close(): Promise<void>;
}

export interface RegistryOptions {
  db: Database;
  config: Config;
  log: FastifyBaseLogger;
  refreshIntervalMs?: number;
  /** The replica's copy of the table (in SPOOL_DIR): read when the table cannot be, saved after every load. */
  localCopy?: SourcesCopy | undefined;
  /** Recorded with the key ids this process holds, for the CLI's check before it seals. */
  replica?: Replica | undefined;
}

function environmentSources(config: Config): Map<Vendor, Source> {
  const now = new Date(0).toISOString();
  const fromList = (values: readonly string[]) => values.map((value) => ({ value, addedAt: now, notAfter: null }));
  const sources = new Map<Vendor, Source>();
  const base = { id: DEFAULT_SOURCE_ID, name: 'default (environment variables)', status: 'active' as const };
  if (isPatiroConfigured(config.patiro)) {
    const { signingSecrets, token, basicAuth } = config.patiro;
    sources.set('patiro', { ...base, vendor: 'patiro', secrets: fromList(signingSecrets), token: token ?? null, basicAuth });
  }
  if (config.physitrack.apiKeys.length > 0) {
    const { apiKeys, tokens } = config.physitrack;
    sources.set('physitrack', { ...base, vendor: 'physitrack', secrets: fromList(apiKeys), token: null, practitionerTokens: tokens });
  }
  return sources;
}

export async function createSourceRegistry({ db, config, log, refreshIntervalMs = 15_000, localCopy, replica }: RegistryOptions): Promise<SourceRegistry> {
  const keyring = createKeyring(config.sources.secretKeys);
  const keyIds = config.sources.secretKeys.map(keyIdOf);
  const fromEnvironment = environmentSources(config);
  let fromTable = new Map<string, Source>();
  /** Where the table's sources came from: a copy may lack a source created since it was saved. */
  let tableFrom: 'nowhere' | 'copy' | 'database' = 'nowhere';
  // Each unreadable source is logged once (per sealed value), not at every reload.
  let reported = new Set<string>();
  // Opening is cheap, but a reload per change should not redo every source: keyed by the sealed text.
  let opened = new Map<string, Source>();

  function toSource(row: CopiedSource): Source {
    const cacheKey = `${row.vendor}/${row.id}/${row.credentials}`;
    const known = opened.get(cacheKey);
    const base = { vendor: row.vendor, id: row.id, name: row.name, status: row.status };
    if (known && !known.unreadable) return { ...known, ...base };
    try {
      const credentials = parseCredentials(keyring.open(row.credentials!, row.id));
      return { ...base, secrets: credentials.secrets, token: credentials.token };
    } catch (err) {
      return { ...base, secrets: [], token: null, unreadable: (err as Error).message };
    }
  }

  /**
   * A source whose credentials do not open (sealed with a key this process lacks) answers 503 and
   * is named in an error; every other source is served. It never stops the replica.
   */
  function readTable(all: CopiedSource[], from: 'copy' | 'database'): void {
    const rows = all.filter((r) => r.credentials !== null);
    const next = new Map<string, Source>();
    const nextOpened = new Map<string, Source>();
    const nextReported = new Set<string>();
    for (const row of rows) {
      const source = toSource(row);
      const cacheKey = `${row.vendor}/${row.id}/${row.credentials}`;
      if (source.unreadable) {
        if (!reported.has(cacheKey)) {
          const hint = keyring.size === 0 ? 'SOURCES_SECRET_KEY is not set' : 'add the key that sealed it to SOURCES_SECRET_KEY';
          log.error({ vendor: row.vendor, sourceId: row.id, reason: source.unreadable, hint }, 'the credentials of this source cannot be opened; its deliveries get 503');
        }
        nextReported.add(cacheKey);
      }
      next.set(`${row.vendor}/${row.id}`, source);
      nextOpened.set(cacheKey, source);
    }
    fromTable = next;
    opened = nextOpened;
    reported = nextReported;
    tableFrom = from;
  }

  // The environment's rows are written once; until that has worked, each reload tries again.
  let defaultsRecorded = false;
  async function load(): Promise<CopiedSource[]> {
    if (!defaultsRecorded) {
      await recordDefaultSources(db, { patiro: fromEnvironment.has('patiro'), physitrack: fromEnvironment.has('physitrack') });
      defaultsRecorded = true;
    }
    const rows = await readAllSources(db);
    await localCopy?.save(rows).catch((err: unknown) => log.warn({ err }, 'could not save the local copy of the sources'));
    if (replica) await recordReplica(db, replica, keyIds).catch((err: unknown) => log.warn({ err }, 'could not record this replica in receiver_replicas'));
    return rows;
  }

  // A database that cannot be read yet does not stop the environment's source from being served,
  // nor, from the local copy, the table's.
  try {
    readTable(await load(), 'database');
  } catch (err) {
    const copy = await localCopy?.read();
    if (copy) {
      readTable(copy, 'copy');
      log.warn({ err, sources: copy.length }, 'could not read the sources table; serving the sources of the local copy and trying again');
    } else {
      log.warn({ err }, 'could not read the sources table and there is no local copy: serving the environment source; table sources answer 503 until it is read');
    }
  }

  let reloading: Promise<void> | undefined;
  let again = false;
  const reload = async (): Promise<void> => {
    if (reloading) {
      again = true;
      return reloading;
    }
    reloading = (async () => {
      do {
        again = false;
        try {
          readTable(await load(), 'database');
        } catch (err) {
          log.warn({ err }, 'could not reload the sources; serving the ones already loaded');
        }
      } while (again);
    })().finally(() => (reloading = undefined));
    return reloading;
  };

  let listener: ControlChannel | undefined;
  // The safety net: reload, and make sure the listening connection still answers.
  const timer = setInterval(() => {
    void reload();
    listener?.check();
  }, refreshIntervalMs);
  timer.unref();

  return {
    lookup(vendor, id) {
      if (id !== DEFAULT_SOURCE_ID && tableFrom === 'nowhere') return { found: 'unknown' };
      const source = id === DEFAULT_SOURCE_ID ? fromEnvironment.get(vendor) : fromTable.get(`${vendor}/${id}`);
      // Not in a copy: perhaps created after it was saved. Only the table itself can say "no such source".
      if (!source) return { found: id !== DEFAULT_SOURCE_ID && tableFrom === 'copy' ? 'unknown' : 'none' };
      return { found: source.status === 'active' ? 'active' : 'disabled', source };
    },
    reload,
    async listen(databaseUrl) {
      listener = await followControlChannel(databaseUrl, log, () => void reload());
    },
    async close() {
      clearInterval(timer);
      await listener?.close();
      await reloading;
    },
  };
}

/**
 * LISTENs on its own connection (a pooled one could be handed to a query mid-notification).
 * When the connection drops, it reconnects with backoff and reloads once back, since changes
 * made meanwhile were not heard.
 */
interface ControlChannel {
  /** A query on the listening connection: one that went silent (a NAT that forgot it) is replaced. */
  check(): void;
  close(): Promise<void>;
}

async function followControlChannel(databaseUrl: string, log: FastifyBaseLogger, onChange: () => void): Promise<ControlChannel> {
  let client: pg.Client | undefined;
  let closed = false;
  let retryMs = 500;
  let timer: NodeJS.Timeout | undefined;
  let lose: ((err?: Error) => void) | undefined;

  const connect = async (): Promise<void> => {
    const next = new pg.Client({ connectionString: databaseUrl, keepAlive: true, keepAliveInitialDelayMillis: 30_000, connectionTimeoutMillis: 5000, query_timeout: 5000 });
    next.on('notification', onChange);
    // A client that is not the current one any more (already replaced) is not mourned twice.
    let live = false;
    const lost = (err?: Error) => {
      if (closed || !live || client !== next) return;
      live = false;
      log.warn({ err }, 'lost the sources control channel; reconnecting');
      void next.end().catch(() => undefined);
      scheduleReconnect();
    };
    next.on('error', lost);
    next.on('end', () => lost());
    lose = lost;
    client = next;
    try {
      await next.connect();
      await next.query(`LISTEN ${SOURCES_CHANNEL}`);
      live = true;
    } catch (err) {
      client = undefined;
      await next.end().catch(() => undefined);
      throw err;
    }
    retryMs = 500;
  };

  function scheduleReconnect(): void {
    if (closed || timer) return;
    client = undefined;
    timer = setTimeout(() => {
      timer = undefined;
      connect().then(onChange, (err: unknown) => {
        log.warn({ err, retryInMs: retryMs }, 'could not reconnect the sources control channel');
        retryMs = Math.min(retryMs * 2, 30_000);
        scheduleReconnect();
      });
    }, retryMs);
    timer.unref();
  }

  // Not being able to listen is no reason not to serve: the periodic reload still runs.
  await connect().catch((err: unknown) => {
    log.warn({ err }, 'could not listen for source changes; reloading periodically until it can');
    scheduleReconnect();
  });
  return {
    check() {
      const current = client;
      const mourn = lose;
      current?.query('SELECT 1').catch((err: Error) => {
        if (client === current) mourn?.(err);
      });
    },
    async close() {
      closed = true;
      clearTimeout(timer);
      await client?.end().catch(() => undefined);
    },
  };
}
