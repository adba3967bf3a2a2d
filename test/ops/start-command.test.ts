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

describe('the start command', () => {
  it('runs node with the same flags in the container as with npm start', () => {
    const start = (JSON.parse(repoFile('package.json')) as { scripts: Record<string, string> }).scripts.start!;
    const npmCommand = start.split('&& exec ')[1]!.trim().split(/\s+/);
    const cmdLine = /^CMD (\[.*\])$/m.exec(repoFile('Dockerfile'));
    expect(cmdLine, 'the Dockerfile has a CMD in exec form').not.toBeNull();
    const dockerCommand = JSON.parse(cmdLine![1]!) as string[];
    expect(flagsBeforeMain(dockerCommand)).toEqual(flagsBeforeMain(npmCommand));
    expect(flagsBeforeMain(npmCommand)).toContain('--max-semi-space-size=2');
  });
});
