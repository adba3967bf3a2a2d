import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import dotenv from 'dotenv';
import { ConfigError, loadConfig, type Config, type Env } from '../config.js';
import { withDevSecrets } from '../dev-secrets.js';
import { closeDatabase, createDatabase } from '../db/client.js';
import { consumerCommands } from './commands/consumers.js';
import { dbCommands } from './commands/db.js';
import { deliveryCommands } from './commands/deliveries.js';
import { documentCommands } from './commands/documents.js';
import { eventCommands } from './commands/events.js';
import { patientCommands } from './commands/patients.js';
import { programCommands } from './commands/programs.js';
import { purgeCommands } from './commands/purge.js';
import { sourceCommands } from './commands/sources.js';
import { sourceDeleteCommand } from './commands/sources-delete.js';
import { spoolCommands } from './commands/spool.js';
import { statusCommands } from './commands/status.js';
import { EXIT, UsageError, type CliIo, type Command, type OptionSpec, type OptionValues } from './output.js';

export type { CliIo } from './output.js';

const COMMANDS: Command[] = [
  ...statusCommands,
  ...consumerCommands,
  ...dbCommands,
  ...deliveryCommands,
  ...documentCommands,
  ...eventCommands,
  ...patientCommands,
  ...programCommands,
  ...purgeCommands,
  ...sourceCommands,
  sourceDeleteCommand,
  ...spoolCommands,
];

const COMMON: OptionSpec = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } };

const EXIT_CODES = `Exit codes: 0 ok; 1 not found, nothing matched, or verification failed; 2 usage or
configuration error; 3 the command failed (database unreachable, I/O error).`;

const synopsis = (c: Command) => `${c.path.join(' ')}${c.synopsis ? ` ${c.synopsis}` : ''}`;

/** Each command's synopsis, and its summary indented below it. */
function listing(commands: Command[]): string {
  return commands.map((c) => `  ${synopsis(c)}\n      ${c.summary}`).join('\n');
}

function overallHelp(): string {
  return `Usage: npm run cli -- <command> [options]
       (in the container: node dist/cli/main.js <command> [options])

Operator commands for the webhook receiver. They read DATABASE_URL, PDF_STORAGE, PDF_DIR and
SOURCES_SECRET_KEY from the environment or .env, as the service does (outside production, the key
from DATA_DIR/dev-secrets.json).

Commands:
${listing(COMMANDS)}

Every command takes --json (output for scripts) and --help. Durations are like 90d, 12h or 30m.
${EXIT_CODES}`;
}

function groupHelp(group: string): string {
  return `Usage: npm run cli -- ${group} <subcommand> [options]\n\n${listing(COMMANDS.filter((c) => c.path[0] === group))}\n\n${EXIT_CODES}`;
}

function commandHelp(c: Command): string {
  return `Usage: npm run cli -- ${synopsis(c)} [--json]\n\n${c.summary}\n\n${c.details}\n\n${EXIT_CODES}`;
}

function findCommand(argv: string[]): Command | undefined {
  const matches = COMMANDS.filter((c) => c.path.every((word, i) => argv[i] === word));
  return matches.sort((a, b) => b.path.length - a.path.length)[0];
}

/** Where a command that never queries "connects": nowhere (port 1 refuses at once, were it ever asked). */
const UNUSED_DATABASE_URL = 'postgresql://127.0.0.1:1/unused';

function readConfig(env: Env, needsDatabase: boolean): Config & { databaseUrl: string } {
  let config: Config;
  try {
    // A command that never queries runs without DATABASE_URL, also where production requires it.
    config = loadConfig(needsDatabase || env.DATABASE_URL ? env : { ...env, DATABASE_URL: UNUSED_DATABASE_URL });
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
  // A command that never queries gets a client that is never connected.
  if (!needsDatabase) return { ...config, databaseUrl: config.databaseUrl ?? UNUSED_DATABASE_URL };
  if (!config.databaseUrl) {
    // The embedded database belongs to the running service; a second process must not start one.
    throw new UsageError('set DATABASE_URL (the running service logs the embedded database\'s psql URL at start)');
  }
  return { ...config, databaseUrl: config.databaseUrl };
}

/** Runs one command and returns its exit code; never exits the process, so tests call it directly. */
export async function run(argv: string[], env: Env, io: CliIo): Promise<number> {
  const say = (stream: 'stdout' | 'stderr', text: string) => io[stream].write(`${text}\n`);
  const first = argv[0];
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    say(first === undefined ? 'stderr' : 'stdout', overallHelp());
    return first === undefined ? EXIT.usage : EXIT.ok;
  }
  const cmd = findCommand(argv);
  if (!cmd) {
    const isGroup = COMMANDS.some((c) => c.path[0] === first);
    if (isGroup && (argv[1] === '--help' || argv[1] === '-h')) {
      say('stdout', groupHelp(first));
      return EXIT.ok;
    }
    say('stderr', isGroup ? `Unknown or missing subcommand for "${first}".\n\n${groupHelp(first)}` : `Unknown command "${first}".\n\n${overallHelp()}`);
    return EXIT.usage;
  }

  let values: OptionValues;
  let args: unknown;
  try {
    const parsed = parseArgs({ args: argv.slice(cmd.path.length), options: { ...cmd.options, ...COMMON }, allowPositionals: true, strict: true });
    values = parsed.values as OptionValues;
    if (values.help) {
      say('stdout', commandHelp(cmd));
      return EXIT.ok;
    }
    args = cmd.parse(values, parsed.positionals);
  } catch (err) {
    say('stderr', `${(err as Error).message}\n\nUsage: npm run cli -- ${synopsis(cmd)} [--json]   (--help for details)`);
    return EXIT.usage;
  }

  let config: Config & { databaseUrl: string };
  try {
    config = readConfig(env, cmd.needsDatabase !== false);
  } catch (err) {
    say('stderr', (err as Error).message);
    return EXIT.usage;
  }
  const db = createDatabase({ url: config.databaseUrl, poolSize: 1, connectTimeoutMs: 5000 });
  try {
    return await cmd.run({ db, config, io, json: values.json === true }, args);
  } catch (err) {
    if (err instanceof UsageError) {
      say('stderr', err.message);
      return EXIT.usage;
    }
    say('stderr', `${cmd.path.join(' ')} failed: ${(err as Error).message}`);
    return EXIT.failed;
  } finally {
    await closeDatabase(db);
  }
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

/** Outside production, SOURCES_SECRET_KEY comes from the service's DATA_DIR/dev-secrets.json, if it is there. */
async function environment(): Promise<Env> {
  dotenv.config({ quiet: true });
  return process.env.NODE_ENV === 'production' ? process.env : (await withDevSecrets(process.env, { generate: false })).env;
}

if (isEntryPoint()) {
  // stdin is touched only by a command that reads it (a TTY's stdin would keep the process alive).
  const io: CliIo = { stdout: process.stdout, stderr: process.stderr, get stdin() { return process.stdin; } };
  environment()
    .then((env) => run(process.argv.slice(2), env, io))
    .then(
      (code) => {
        // exitCode, not exit(): a PDF being piped to stdout is flushed before the process ends.
        process.exitCode = code;
      },
      (err: unknown) => {
        process.stderr.write(`cli failed: ${(err as Error).message}\n`);
        process.exitCode = EXIT.failed;
      },
    );
}
