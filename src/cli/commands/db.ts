import type { Readable } from 'node:stream';
import pg from 'pg';
import { command, EXIT, UsageError } from '../output.js';

/** The read contract's schemas, newest last; a reader is granted every one that exists. */
const READ_SCHEMAS = ['receiver_v1'];

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

async function readPassword(stdin: Readable | undefined): Promise<string> {
  if (!stdin) throw new UsageError('--password-stdin: there is no standard input to read');
  const chunks: Buffer[] = [];
  for await (const chunk of stdin) chunks.push(Buffer.from(chunk as Uint8Array));
  const password = Buffer.concat(chunks).toString('utf8').trim();
  if (password.length < 16) throw new UsageError('the password must be at least 16 characters');
  return password;
}

const grantReader = command<{ role: string; passwordStdin: boolean }>({
  path: ['db', 'grant-reader'],
  synopsis: 'ROLE [--password-stdin]',
  summary: 'Make (or update) a read-only role that reads the receiver_v1 views and nothing else.',
  details: `Creates ROLE if it does not exist (with LOGIN), grants it USAGE on the read contract's schema and
SELECT on its views, and makes its transactions read-only. It gets nothing on the tables themselves:
not sources.credentials, not the queue's bookkeeping. Run it again after an upgrade that adds a view
or a new version of the contract. Needs DATABASE_URL of the owner of the tables.
  --password-stdin   set the role's password from standard input (16 characters or more)`,
  options: { 'password-stdin': { type: 'boolean' } },
  parse(values, positionals) {
    if (positionals.length !== 1) throw new UsageError('give exactly one role name');
    const role = positionals[0]!;
    if (!ROLE_NAME.test(role)) throw new UsageError('the role name must be lower-case letters, digits and _ (not starting with a digit)');
    return { role, passwordStdin: values['password-stdin'] === true };
  },
  async run(ctx, { role, passwordStdin }) {
    const password = passwordStdin ? await readPassword(ctx.io.stdin) : undefined;
    const client = new pg.Client({ connectionString: ctx.config.databaseUrl });
    await client.connect();
    try {
      const id = client.escapeIdentifier(role);
      const schemas = (await client.query<{ name: string }>('SELECT nspname AS name FROM pg_namespace WHERE nspname = ANY($1) ORDER BY 1', [READ_SCHEMAS])).rows.map((r) => r.name);
      if (schemas.length === 0) throw new UsageError('the database has no read contract yet: apply the migrations first');
      await client.query('BEGIN');
      const exists = (await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).rowCount === 1;
      if (!exists) await client.query(`CREATE ROLE ${id} LOGIN`);
      if (password !== undefined) await client.query(`ALTER ROLE ${id} PASSWORD ${client.escapeLiteral(password)}`);
      await client.query(`ALTER ROLE ${id} SET default_transaction_read_only = on`);
      for (const schema of schemas) {
        const s = client.escapeIdentifier(schema);
        await client.query(`GRANT USAGE ON SCHEMA ${s} TO ${id}`);
        await client.query(`GRANT SELECT ON ALL TABLES IN SCHEMA ${s} TO ${id}`);
      }
      await client.query('COMMIT');
      const line = `${exists ? 'Updated' : 'Created'} role ${role}: it reads ${schemas.map((s) => `${s}.*`).join(', ')} and nothing else.`;
      if (ctx.json) ctx.io.stdout.write(`${JSON.stringify({ role, created: !exists, schemas })}\n`);
      else ctx.io.stdout.write(`${line}\n`);
      return EXIT.ok;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      await client.end();
    }
  },
});

export const dbCommands = [grantReader];
