import type { FastifyBaseLogger } from 'fastify';
import pg from 'pg';
import { ConfigError, type Config } from '../config.js';
import type { Database } from '../db/client.js';
import type { Vendor } from '../metrics.js';
import { isPatiroConfigured } from '../webhooks/patiro-auth.js';
import { DEFAULT_SOURCE_ID, parseCredentials, type SecretEntry } from './credentials.js';
import { createKeyring, type Keyring } from './sealed.js';
import { readAllSources, recordDefaultSources, SOURCES_CHANNEL, type SourceRow, type SourceStatus } from './sources-table.js';

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

export type Lookup = { found: 'active' | 'disabled'; source: Source } | { found: 'none' };

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

/** A startup error naming what to set, when the table holds credentials the configured keys cannot open. */
function checkKeys(rows: SourceRow[], keyring: Keyring): void {
  const sealed = rows.filter((r) => r.credentials !== null);
  if (sealed.length > 0 && keyring.size === 0) {
    throw new ConfigError([
      `SOURCES_SECRET_KEY: is not set, but the sources table holds ${sealed.length} source(s) with encrypted credentials; set it to the key they were created with`,
    ]);
  }
  const missing = new Map<string, string[]>();
  for (const row of sealed) {
    const keyId = keyring.keyIdOf(row.credentials!) ?? 'unknown';
    if (!keyring.has(keyId)) missing.set(keyId, [...(missing.get(keyId) ?? []), row.id]);
  }
  if (missing.size > 0) {
    const problems = [...missing].map(([keyId, ids]) => `SOURCES_SECRET_KEY: does not include key ${keyId}, which encrypted the credentials of source(s) ${ids.join(', ')}`);
    throw new ConfigError(problems);
  }
}

export async function createSourceRegistry({ db, config, log, refreshIntervalMs = 15_000 }: RegistryOptions): Promise<SourceRegistry> {
  const keyring = createKeyring(config.sources.secretKeys);
  const fromEnvironment = environmentSources(config);
  let fromTable = new Map<string, Source>();
  // Opening is cheap, but a reload per change should not redo every source: keyed by the sealed text.
  let opened = new Map<string, Source>();

  function toSource(row: SourceRow): Source {
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

  async function readTable(all: SourceRow[]): Promise<void> {
    const rows = all.filter((r) => r.credentials !== null);
    const next = new Map<string, Source>();
    const nextOpened = new Map<string, Source>();
    for (const row of rows) {
      const source = toSource(row);
      if (source.unreadable) log.error({ vendor: row.vendor, sourceId: row.id, reason: source.unreadable }, 'the credentials of this source cannot be opened; its deliveries get 503');
      next.set(`${row.vendor}/${row.id}`, source);
      nextOpened.set(`${row.vendor}/${row.id}/${row.credentials}`, source);
    }
    fromTable = next;
    opened = nextOpened;
  }

  // The environment's rows are written once; until that has worked, each reload tries again.
  let defaultsRecorded = false;
  async function load(): Promise<SourceRow[]> {
    if (!defaultsRecorded) {
      await recordDefaultSources(db, { patiro: fromEnvironment.has('patiro'), physitrack: fromEnvironment.has('physitrack') });
      defaultsRecorded = true;
    }
    return readAllSources(db);
  }

  // A database that cannot be read yet does not stop the environment's source from being served;
  // keys that cannot open what the table holds do (the operator must fix the configuration).
  try {
    const rows = await load();
    checkKeys(rows, keyring);
    await readTable(rows);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    log.warn({ err }, 'could not read the sources table; serving the environment source and trying again');
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
          await readTable(await load());
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
      const source = id === DEFAULT_SOURCE_ID ? fromEnvironment.get(vendor) : fromTable.get(`${vendor}/${id}`);
      if (!source) return { found: 'none' };
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
