import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

interface ModelShape {
  table: string;
  columns: Map<string, { nullable: boolean }>;
}

const SCALARS = new Set(['String', 'Int', 'BigInt', 'Float', 'Decimal', 'Boolean', 'DateTime', 'Json', 'Bytes', 'Unsupported']);

/** Reads each model's table and scalar columns (with @map/@@map) from schema.prisma. */
function parseSchema(text: string): ModelShape[] {
  const models: ModelShape[] = [];
  const enums = new Set([...text.matchAll(/^enum\s+(\w+)/gm)].map((m) => m[1]!));
  for (const block of text.matchAll(/^model\s+(\w+)\s*\{([\s\S]*?)^\}/gm)) {
    const [, name, body] = block;
    const table = body!.match(/@@map\("([^"]+)"\)/)?.[1] ?? name!;
    const columns = new Map<string, { nullable: boolean }>();
    for (const line of body!.split('\n')) {
      const field = line.trim().match(/^(\w+)\s+(\w+)(\[\])?(\?)?(.*)$/);
      if (!field || line.trim().startsWith('@@') || line.trim().startsWith('//')) continue;
      const [, fieldName, type, list, optional, rest] = field;
      if (!SCALARS.has(type!) && !enums.has(type!)) continue; // a relation, not a column
      const column = rest!.match(/@map\("([^"]+)"\)/)?.[1] ?? fieldName!;
      columns.set(column, { nullable: Boolean(optional) && !list });
    }
    models.push({ table, columns });
  }
  return models;
}

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => database.drop());

describe('schema.prisma and the migrations', () => {
  it('describe the same tables and columns', async () => {
    const schema = await readFile(path.resolve(import.meta.dirname, '../../prisma/schema.prisma'), 'utf8');
    const models = parseSchema(schema);
    expect(models.length).toBeGreaterThan(0);

    const { rows } = await database.pool.query<{ table_name: string; column_name: string; is_nullable: string }>(
      `SELECT table_name, column_name, is_nullable FROM information_schema.columns
       WHERE table_schema = 'public' AND table_name <> '_prisma_migrations'`,
    );
    const actual = new Map<string, Map<string, { nullable: boolean }>>();
    for (const row of rows) {
      if (!actual.has(row.table_name)) actual.set(row.table_name, new Map());
      actual.get(row.table_name)!.set(row.column_name, { nullable: row.is_nullable === 'YES' });
    }

    const describe = (shape: Map<string, Map<string, { nullable: boolean }>>) =>
      Object.fromEntries([...shape].sort().map(([table, cols]) => [table, Object.fromEntries([...cols].sort())]));
    const expected = new Map(models.map((m) => [m.table, m.columns]));
    expect(describe(actual)).toEqual(describe(expected));
  });
});
