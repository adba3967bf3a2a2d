import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

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
    expect(flagsBeforeMain(npmCommand)).toEqual(expect.arrayContaining(['--max-semi-space-size=2', '--liftoff-only']));
  });

  it('passes only flags this node accepts (a misspelt V8 flag stops node at start)', () => {
    const run = spawnSync(process.execPath, [...flagsBeforeMain(npmStartCommand()), '-e', '0'], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});
