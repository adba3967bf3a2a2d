import net from 'node:net';

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

export interface TcpProxy {
  readonly port: number;
  /** `databaseUrl` with its host and port pointed at the proxy. */
  urlFor(databaseUrl: string): string;
  cut(options: CutOptions): void;
  /** New connections are forwarded again. */
  restore(): Promise<void>;
  /** Connections currently forwarded. */
  openConnections(): number;
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  let mode: 'open' | 'refuse' | 'blackhole' = 'open';
  const pairs = new Set<Pair>();
  const held = new Set<net.Socket>(); // blackholed or frozen: open, silent, never forwarded

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
    const pair = { client, upstream };
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
    client.pipe(upstream);
    upstream.pipe(client);
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
        pair.upstream.unpipe(pair.client);
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
