import Fastify from 'fastify';

// The HTTP limit: Fastify alone, in its own process like the service (run by tsx: nothing to build),
// reading the same JSON bodies as raw bytes and answering 204: no authentication, no database, no
// logging. Whatever the service does beyond this costs throughput.

const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
app.removeAllContentTypeParsers();
app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
app.get('/healthz', async () => ({ status: 'ok' }));
app.post('/webhooks/patiro', async (_request, reply) => reply.code(204).send());
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void app.close().then(() => process.exit(0), () => process.exit(1)));
await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT) });
