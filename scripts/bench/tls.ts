import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

export interface BenchTls {
  key: Buffer;
  cert: Buffer;
  /** The certificate as a PEM file, for NODE_EXTRA_CA_CERTS of the processes that must trust it. */
  certPath: string;
}

/**
 * A self-signed certificate for 127.0.0.1 (and localhost), made fresh by openssl for this run.
 * Processes trust it the way a deployment trusts a private CA: through NODE_EXTRA_CA_CERTS, so the
 * service under test runs unchanged, without any switch that turns certificate checks off.
 */
export async function makeSelfSignedCert(dir: string): Promise<BenchTls> {
  const keyPath = path.join(dir, 'file-host.key');
  const certPath = path.join(dir, 'file-host.crt');
  const args = [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyPath, '-out', certPath, '-days', '1', '-subj', '/CN=webhook-receiver bench file host',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ];
  try {
    await promisify(execFile)('openssl', args);
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new Error(missing ? 'openssl is needed to make the file host certificate, but it is not installed' : `openssl failed: ${String((err as { stderr?: string }).stderr ?? err)}`);
  }
  return { key: await readFile(keyPath), cert: await readFile(certPath), certPath };
}
