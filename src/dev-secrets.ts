import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Env } from './config.js';

/**
 * The secrets a developer would otherwise have to invent before the endpoints exist: the vendor
 * secrets (printed at start, to configure a test sender) and the key that encrypts the sources
 * table's credentials (never printed; the service and the CLI both read it from the file).
 */
const DEV_SECRETS = {
  PATIRO_SIGNING_SECRET: { generate: () => randomBytes(24).toString('base64url'), print: true },
  PHYSITRACK_API_KEY: { generate: () => randomBytes(24).toString('base64url'), print: true },
  SOURCES_SECRET_KEY: { generate: () => randomBytes(32).toString('base64'), print: false },
} as const;

export const DEV_SECRET_NAMES = Object.keys(DEV_SECRETS) as (keyof typeof DEV_SECRETS)[];

export interface DevSecrets {
  env: Env;
  /** The vendor variables that came from the dev secrets file, to print at start. */
  used: Partial<Record<keyof typeof DEV_SECRETS, string>>;
}

/**
 * Outside production, fills unset vendor secrets with random ones generated once and kept in
 * DATA_DIR/dev-secrets.json, so `npm start` gives working, authenticated endpoints at once.
 * In production nothing is generated: the caller does not call this. With `generate: false` (the
 * operator CLI) only what the file already holds is used: a CLI pointed at another database must
 * not seal its sources with a key of its own making.
 */
export async function withDevSecrets(env: Env, { generate = true }: { generate?: boolean } = {}): Promise<DevSecrets> {
  const dataDir = path.resolve(env.DATA_DIR?.trim() || './data');
  const file = path.join(dataDir, 'dev-secrets.json');
  const stored: Record<string, string> = existsSync(file) ? JSON.parse(await readFile(file, 'utf8')) : {};
  let changed = false;
  const used: DevSecrets['used'] = {};
  const merged: Env = { ...env };
  for (const name of DEV_SECRET_NAMES) {
    if (env[name]?.trim()) continue;
    if (!stored[name]) {
      if (!generate) continue;
      stored[name] = DEV_SECRETS[name].generate();
      changed = true;
    }
    merged[name] = stored[name];
    if (DEV_SECRETS[name].print) used[name] = stored[name];
  }
  if (changed) {
    await mkdir(dataDir, { recursive: true });
    await writeFile(file, `${JSON.stringify(stored, null, 2)}\n`, { mode: 0o600 });
  }
  return { env: merged, used };
}
