import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';

// A throwaway CA and a server certificate for localhost, trusted by the test workers the way a
// real deployment trusts a CA: through NODE_EXTRA_CA_CERTS, so the code under test needs no TLS switch.
//
// NODE_EXTRA_CA_CERTS is read once when a Node process starts. It works here because vitest 4 runs
// global setup before it forks the workers and forks them with `{ ...process.env, ...test.env }`
// copied at that moment (test/downloads/guarded-fetch.test.ts proves it with a real handshake).

export interface TestTlsFiles {
  caCertPath: string;
  serverKeyPath: string;
  serverCertPath: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    tls: TestTlsFiles;
  }
}

const serverExtensions = [
  'basicConstraints = critical, CA:FALSE',
  'keyUsage = critical, digitalSignature',
  'extendedKeyUsage = serverAuth',
  // *.physitrack.test lets tests use realistic names through an injected resolver.
  'subjectAltName = DNS:localhost, DNS:*.physitrack.test, IP:127.0.0.1, IP:::1',
].join('\n');

function openssl(args: string[]): void {
  try {
    execFileSync('openssl', args, { stdio: 'pipe' });
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new Error(
      missing
        ? 'The openssl command is needed to make the test TLS certificate, but it is not installed.'
        : `openssl ${args[0]} failed: ${String((error as { stderr?: Buffer }).stderr ?? error)}`,
    );
  }
}

function generate(dir: string): TestTlsFiles & { caKeyPath: string } {
  const files = {
    caKeyPath: join(dir, 'ca.key'),
    caCertPath: join(dir, 'ca.crt'),
    serverKeyPath: join(dir, 'server.key'),
    serverCertPath: join(dir, 'server.crt'),
  };
  const csrPath = join(dir, 'server.csr');
  const extensionsPath = join(dir, 'server.ext');
  writeFileSync(extensionsPath, serverExtensions);
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ecKey, '-keyout', files.caKeyPath, '-out', files.caCertPath, '-days', '2',
    '-subj', '/CN=webhook-receiver test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', ...ecKey, '-keyout', files.serverKeyPath, '-out', csrPath, '-subj', '/CN=localhost']);
  openssl(['x509', '-req', '-in', csrPath, '-CA', files.caCertPath, '-CAkey', files.caKeyPath,
    '-CAcreateserial', '-out', files.serverCertPath, '-days', '2', '-extfile', extensionsPath]);
  return files;
}

export default function setup(project: TestProject): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'receiver-test-tls-'));
  const files = generate(dir);
  // Keep a CA bundle the developer already relies on (a corporate proxy, say) trusted as well.
  const inherited = process.env.NODE_EXTRA_CA_CERTS;
  const bundlePath = join(dir, 'trusted-bundle.pem');
  const extra = inherited !== undefined && existsSync(inherited) ? `\n${readFileSync(inherited, 'utf8')}` : '';
  writeFileSync(bundlePath, readFileSync(files.caCertPath, 'utf8') + extra);
  process.env.NODE_EXTRA_CA_CERTS = bundlePath;

  project.provide('tls', {
    caCertPath: files.caCertPath,
    serverKeyPath: files.serverKeyPath,
    serverCertPath: files.serverCertPath,
  });

  return () => {
    if (inherited === undefined) delete process.env.NODE_EXTRA_CA_CERTS;
    else process.env.NODE_EXTRA_CA_CERTS = inherited;
    rmSync(dir, { recursive: true, force: true });
  };
}
