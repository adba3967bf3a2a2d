import { readFileSync } from 'node:fs';
import { inject } from 'vitest';

export interface ServerTlsMaterial {
  key: Buffer;
  cert: Buffer;
}

/** Key and certificate (valid for localhost, 127.0.0.1, ::1 and *.physitrack.test) made by the TLS global setup. */
export function testServerTls(): ServerTlsMaterial {
  const files = inject('tls');
  return { key: readFileSync(files.serverKeyPath), cert: readFileSync(files.serverCertPath) };
}
