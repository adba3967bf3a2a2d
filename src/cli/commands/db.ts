import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
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
  // Printable ASCII is what SASLprep leaves as it is, so the verifier below matches what PostgreSQL checks.
  if (!/^[\x20-\x7e]+$/.test(password)) throw new UsageError('the password must be printable ASCII (letters, digits, punctuation, spaces)');
  return password;
}

/**
 * The SCRAM-SHA-256 verifier PostgreSQL stores for a password (RFC 5802, 4096 iterations as its
 * default), computed here as psql's \password does: the server, and any statement log it keeps,
 * sees only the verifier, never the password.
 */
export function scramVerifier(password: string, salt = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const hmac = (key: Buffer, text: string) => createHmac('sha256', key).update(text).digest();
  const storedKey = createHash('sha256').update(hmac(salted, 'Client Key')).digest();
  const serverKey = hmac(salted, 'Server Key');
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** What a role made here says of itself: only such a role is updated when the command runs again. */
const READER_MARK = 'webhook-receiver reader: made by db grant-reader, reads the receiver_v1 views only';

/**
 * An existing role is the reader only if this command made it: granting SELECT on the views to any
 * other would not take away what it already has (a table's owner, a member of the owner's role, a
 * column grant, CREATEROLE...), and making its transactions read-only could break whoever uses it.
 * A superuser or the connecting role is refused even when marked.
 */
const EXISTING_ROLE = `SELECT r.rolname = current_user AS is_current, r.rolsuper AS is_super,
  shobj_description(r.oid, 'pg_authid') IS NOT DISTINCT FROM $2 AS made_here
FROM pg_roles r WHERE r.rolname = $1`;

const grantReader = command<{ role: string; passwordStdin: boolean }>({
  path: ['db', 'grant-reader'],
  synopsis: 'ROLE [--password-stdin]',
  summary: 'Make (or update) a read-only role that reads the receiver_v1 views and nothing else.',
  details: `Creates ROLE if it does not exist (with LOGIN), grants it USAGE on the read contract's schema,
SELECT on its views and EXECUTE on its functions (the change feed), and makes its transactions
read-only. It gets nothing on the tables themselves: not sources.credentials, not the queue's
bookkeeping. Run it again after an upgrade that adds a view or a new version of the contract. Needs
DATABASE_URL of the owner of the tables. An existing role is updated only if this command made it
(it marks its roles): the views would not limit any other.
  --password-stdin   set the role's password from standard input (16 printable ASCII characters or
                     more); only its SCRAM-SHA-256 verifier is sent, so no server log can hold it`,
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
      const [existing] = (await client.query<Record<'is_current' | 'is_super' | 'made_here', boolean>>(EXISTING_ROLE, [role, READER_MARK])).rows;
      const exists = existing !== undefined;
      if (existing) {
        if (existing.is_current || existing.is_super) {
          throw new UsageError(`role ${role} is ${existing.is_current ? 'the role this command connects as' : 'a superuser'}: it cannot be made a reader of the views only; choose a new role name`);
        }
        if (!existing.made_here) throw new UsageError(`role ${role} exists and was not made by db grant-reader: the views would not limit what it may already read; choose a new role name`);
      }
      if (!exists) {
        await client.query(`CREATE ROLE ${id} LOGIN`);
        await client.query(`COMMENT ON ROLE ${id} IS ${client.escapeLiteral(READER_MARK)}`);
      }
      if (password !== undefined) await client.query(`ALTER ROLE ${id} PASSWORD ${client.escapeLiteral(scramVerifier(password))}`);
      await client.query(`ALTER ROLE ${id} SET default_transaction_read_only = on`);
      for (const schema of schemas) {
        const s = client.escapeIdentifier(schema);
        await client.query(`GRANT USAGE ON SCHEMA ${s} TO ${id}`);
        await client.query(`GRANT SELECT ON ALL TABLES IN SCHEMA ${s} TO ${id}`);
        await client.query(`GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${s} TO ${id}`);
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
