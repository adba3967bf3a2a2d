import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Env } from './config.js';

/** The vendor secrets a developer would otherwise have to invent before the endpoints exist. */
export const DEV_SECRET_NAMES = ['PATIRO_SIGNING_SECRET', 'PHYSITRACK_API_KEY'] as const;

export interface DevSecrets {
  env: Env;
  /** The variables that came from the dev secrets file, to print at start. */
  used: Partial<Record<(typeof DEV_SECRET_NAMES)[number], string>>;
}

/**
 * Outside production, fills unset vendor secrets with random ones generated once and kept in
 * DATA_DIR/dev-secrets.json, so `npm start` gives working, authenticated endpoints at once.
 * In production nothing is generated: the caller does not call this.
 */
export async function withDevSecrets(env: Env): Promise<DevSecrets> {
  const dataDir = path.resolve(env.DATA_DIR?.trim() || './data');
  const file = path.join(dataDir, 'dev-secrets.json');
  const stored: Record<string, string> = existsSync(file) ? JSON.parse(await readFile(file, 'utf8')) : {};
  let changed = false;
  const used: DevSecrets['used'] = {};
  const merged: Env = { ...env };
  for (const name of DEV_SECRET_NAMES) {
    if (env[name]?.trim()) continue;
    if (!stored[name]) {
      stored[name] = randomBytes(24).toString('base64url');
      changed = true;
    }
    merged[name] = stored[name];
    used[name] = stored[name];
  }
  if (changed) {
    await mkdir(dataDir, { recursive: true });
    await writeFile(file, `${JSON.stringify(stored, null, 2)}\n`, { mode: 0o600 });
  }
  return { env: merged, used };
}
