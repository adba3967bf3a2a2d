import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { unreachableDatabaseUrl } from '../helpers/database.js';

const repoFile = (name: string) => readFileSync(new URL(`../../${name}`, import.meta.url), 'utf8');

/** The node flags before dist/main.js in a command line. */
function flagsBeforeMain(command: string[]): string[] {
  const main = command.indexOf('dist/main.js');
  expect(main, `no dist/main.js in ${command.join(' ')}`).toBeGreaterThan(0);
  expect(command[0]).toBe('node');
  return command.slice(1, main);
}

function npmStartCommand(): string[] {
  const start = (JSON.parse(repoFile('package.json')) as { scripts: Record<string, string> }).scripts.start!;
  return start.split('&& exec ')[1]!.trim().split(/\s+/);
}

describe('the start command', () => {
  it('runs node with the same flags in the container as with npm start', () => {
    const npmCommand = npmStartCommand();
    const cmdLine = /^CMD (\[.*\])$/m.exec(repoFile('Dockerfile'));
    expect(cmdLine, 'the Dockerfile has a CMD in exec form').not.toBeNull();
    const dockerCommand = JSON.parse(cmdLine![1]!) as string[];
    expect(flagsBeforeMain(dockerCommand)).toEqual(flagsBeforeMain(npmCommand));
    expect(flagsBeforeMain(npmCommand)).toEqual(expect.arrayContaining(['--max-semi-space-size=2', '--no-wasm-tier-up', '--no-wasm-dynamic-tiering']));
  });

  it('passes only flags this node accepts (a misspelt V8 flag stops node at start)', () => {
    const run = spawnSync(process.execPath, [...flagsBeforeMain(npmStartCommand()), '-e', '0'], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });

  // A CPU without SSE4.1 (QEMU's default model, for one) makes V8's baseline wasm compiler give up on
  // Prisma's query compiler. V8 must then fall back to its optimizing compiler: a flag such as
  // --liftoff-only turns that into a fatal error at the first query, long after startup looked fine.
  it('keeps Prisma working on a CPU without SSE4.1', async () => {
    const withoutSse41 = ['--no-enable-sse4-1', '--no-enable-ssse3', '--no-enable-sse3', '--no-enable-avx', '--no-wasm-lazy-compilation'];
    const fixture = fileURLToPath(new URL('fixtures/prisma-first-query.ts', import.meta.url));
    const args = [...flagsBeforeMain(npmStartCommand()), ...withoutSse41, '--import', 'tsx', fixture, await unreachableDatabaseUrl()];
    const run = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 60_000 });
    expect(run.stderr).not.toContain('Fatal error');
    expect(run.stdout.trim()).toBe('the query failed cleanly: PrismaClientKnownRequestError');
    expect(run.status).toBe(0);
  });
});
