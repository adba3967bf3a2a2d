import net from 'node:net';
import { Transform } from 'node:stream';

// A TCP proxy on 127.0.0.1:<port 0> in front of the test PostgreSQL, so a test can take the
// database away from a running service in the ways networks really fail.

export interface CutOptions {
  /**
   * `refuse`: nothing listens any more (ECONNREFUSED at once).
   * `blackhole`: connections are accepted but never answered (the client must time out).
   */
  newConnections: 'refuse' | 'blackhole';
  /**
   * `destroy` (default): open connections are closed, the client sees the socket end.
   * `freeze`: open connections stay open but go silent in both directions, and stay silent after
   * restore(): a half-open connection to a database host that went away (failover, lost NAT state).
   */
  currentConnections?: 'destroy' | 'freeze';
}

export interface LoseAnswerOptions {
  /** Every one of these must occur in one server→client chunk for it to be the answer lost. */
  pattern: string | Buffer | (string | Buffer)[];
  /**
   * Only on a connection that has already carried a server→client chunk containing this: e.g. the
   * RowDescription of a statement, so that `pattern` (a `COMMIT` tag) is its transaction's answer.
   */
  after?: string | Buffer;
}

export interface LostAnswer {
  /** Date.now() when the chunk was dropped and the connection cut. */
  at: number;
  /** The chunk that never reached the client. */
  chunk: Buffer;
}

export interface TcpProxy {
  readonly port: number;
  /** `databaseUrl` with its host and port pointed at the proxy. */
  urlFor(databaseUrl: string): string;
  cut(options: CutOptions): void;
  /** New connections are forwarded again. */
  restore(): Promise<void>;
  /**
   * Arms a one-shot fault: the first server→client chunk that matches is dropped and both sockets
   * destroyed. The server did the work (a COMMIT it answered has committed); the client only sees
   * the connection lost. Resolves when it fired.
   */
  loseAnswer(options: LoseAnswerOptions): Promise<LostAnswer>;
  /** Connections currently forwarded. */
  openConnections(): number;
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  /** Between upstream and client: forwards the server's chunks, or drops the one armed to be lost. */
  answers: Transform;
}

const toBuffer = (value: string | Buffer) => (Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8'));

interface Armed {
  patterns: Buffer[];
  after: Buffer | undefined;
  fire(lost: LostAnswer): void;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  let mode: 'open' | 'refuse' | 'blackhole' = 'open';
  const pairs = new Set<Pair>();
  const held = new Set<net.Socket>(); // blackholed or frozen: open, silent, never forwarded
  let armed: Armed | undefined;
  const primed = new WeakSet<Pair>(); // connections that carried `after`

  const hold = (socket: net.Socket) => {
    held.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => held.delete(socket));
    socket.removeAllListeners('data');
    socket.on('data', () => undefined); // read and drop, so the peer's writes succeed and go nowhere
  };

  const onConnection = (client: net.Socket) => {
    if (mode !== 'open') return hold(client);
    const upstream = net.connect(target.port, target.host);
    const answers = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        const fault = armed;
        if (fault && (fault.after === undefined || primed.has(pair)) && fault.patterns.every((p) => chunk.includes(p))) {
          armed = undefined;
          end();
          fault.fire({ at: Date.now(), chunk });
          return callback();
        }
        if (fault?.after !== undefined && chunk.includes(fault.after)) primed.add(pair);
        callback(null, chunk);
      },
    });
    const pair: Pair = { client, upstream, answers };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('error', end);
      socket.on('close', end);
    }
    answers.on('error', end);
    client.pipe(upstream);
    upstream.pipe(answers).pipe(client);
  };

  let server = net.createServer(onConnection);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;

  /** Listens on the same port again; an outgoing connection may hold it as its local port for a moment. */
  const listen = async () => {
    for (let attempt = 1; ; attempt++) {
      server = net.createServer(onConnection);
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen(port, '127.0.0.1', () => resolve());
        });
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 40) throw err;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  };

  return {
    port,
    urlFor(databaseUrl) {
      const url = new URL(databaseUrl);
      url.hostname = '127.0.0.1';
      url.port = String(port);
      return url.toString();
    },
    cut({ newConnections, currentConnections = 'destroy' }) {
      mode = newConnections;
      // Closing the listening socket refuses at once; connections already open are handled below.
      if (newConnections === 'refuse') server.close();
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        if (currentConnections === 'destroy') {
          pair.client.destroy();
          pair.upstream.destroy();
          continue;
        }
        pair.client.unpipe(pair.upstream);
        pair.upstream.unpipe(pair.answers);
        pair.answers.unpipe(pair.client);
        pair.client.removeAllListeners('close');
        pair.upstream.removeAllListeners('close');
        hold(pair.client);
        hold(pair.upstream);
      }
    },
    async restore() {
      if (mode === 'refuse') await listen();
      mode = 'open';
    },
    loseAnswer({ pattern, after }) {
      const patterns = (Array.isArray(pattern) ? pattern : [pattern]).map(toBuffer);
      return new Promise<LostAnswer>((resolve) => {
        armed = { patterns, after: after === undefined ? undefined : toBuffer(after), fire: resolve };
      });
    },
    openConnections: () => pairs.size,
    async close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
    },
  };
}
