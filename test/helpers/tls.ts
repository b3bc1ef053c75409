/**
 * TLS for tests, made fresh by each test with openssl: a test CA, a server certificate for a name, client
 * certificates (valid and expired) and a second CA that signed nothing here; and nginx (Debian's package)
 * in front of a Temporal server as a TLS-terminating gRPC proxy that can require a client certificate
 * from the test CA (mTLS) and an API key (`authorization: Bearer KEY`, as Temporal clients send it).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { freePort } from '../../infra/temporal';
import { withTimeout } from './temporal';

export interface TestCertificates {
  dir: string;
  /** The server's name (its certificate's only subject alternative name). */
  serverName: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Signed by the test CA, valid only in January 2020. */
  expiredClientCert: string;
  /** A CA that signed none of the above. */
  otherCa: string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

export function makeCertificates(dir: string, serverName = 'temporal.test'): TestCertificates {
  mkdirSync(dir, { recursive: true });
  const selfSignedCa = (name: string, cn: string) =>
    openssl(dir, [
      'req',
      '-x509',
      ...KEY,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
      '-subj',
      `/CN=${cn}`,
      '-days',
      '2',
    ]);
  selfSignedCa('ca', 'ckpt test CA');
  selfSignedCa('other-ca', 'ckpt other CA');
  const request = (name: string, cn: string) =>
    openssl(dir, [
      'req',
      '-new',
      ...KEY,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${cn}`,
    ]);
  writeFileSync(join(dir, 'server.ext'), `subjectAltName=DNS:${serverName}\nextendedKeyUsage=serverAuth\n`);
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  request('server', serverName);
  request('client', 'ckpt worker');
  const sign = (name: string, ext: string) =>
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      ext,
      '-out',
      `${name}.pem`,
    ]);
  sign('server', 'server.ext');
  sign('client', 'client.ext');
  // An expired certificate needs chosen dates: `openssl ca` takes them (x509 -req does not, in OpenSSL 3.0).
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '1000\n');
  writeFileSync(
    join(dir, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = test',
      '[test]',
      'database = index.txt',
      'new_certs_dir = .',
      'serial = serial',
      'default_md = sha256',
      'policy = any',
      'x509_extensions = client',
      '[any]',
      'commonName = supplied',
      '[client]',
      'extendedKeyUsage = clientAuth',
      '',
    ].join('\n'),
  );
  openssl(dir, [
    'ca',
    '-batch',
    '-config',
    'ca.cnf',
    '-cert',
    'ca.pem',
    '-keyfile',
    'ca.key',
    '-in',
    'client.csr',
    '-startdate',
    '20200101000000Z',
    '-enddate',
    '20200201000000Z',
    '-out',
    'expired.pem',
    '-notext',
  ]);
  const at = (f: string) => join(dir, f);
  return {
    dir,
    serverName,
    ca: at('ca.pem'),
    serverCert: at('server.pem'),
    serverKey: at('server.key'),
    clientCert: at('client.pem'),
    clientKey: at('client.key'),
    expiredClientCert: at('expired.pem'),
    otherCa: at('other-ca.pem'),
  };
}

/** Debian installs nginx in /usr/sbin, which a non-root PATH may lack. */
function nginxPath(): string {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin']) {
    if (dir && existsSync(join(dir, 'nginx'))) return join(dir, 'nginx');
  }
  throw new Error('nginx is missing: the TLS test needs it (bash infra/install-tools.sh installs it)');
}

export interface TlsProxy {
  /** host:port to connect to (127.0.0.1: the server name comes from the client's settings). */
  address: string;
  log(): string;
  stop(): Promise<void>;
}

export interface TlsProxyOptions {
  /** The plain gRPC server behind the proxy (host:port). */
  upstream: string;
  certs: TestCertificates;
  /** Require a client certificate signed by the test CA. */
  mutual?: boolean;
  /** Require `authorization: Bearer <apiKey>`. */
  apiKey?: string;
}

export async function startTlsProxy(options: TlsProxyOptions): Promise<TlsProxy> {
  const { certs } = options;
  const port = await freePort();
  const dir = join(certs.dir, `nginx-${port}`);
  mkdirSync(dir, { recursive: true });
  // Long polls last about a minute: nothing on this path may time out before them.
  const long = ['client_body_timeout', 'keepalive_timeout', 'grpc_read_timeout', 'grpc_send_timeout']
    .map((d) => `${d} 1h;`)
    .join(' ');
  const config = `
daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  ${long}
  http2_max_requests 1000000;
  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${certs.serverCert};
    ssl_certificate_key ${certs.serverKey};
    ${options.mutual ? `ssl_client_certificate ${certs.ca}; ssl_verify_client on;` : ''}
    location / {
      ${options.apiKey ? `if ($http_authorization != "Bearer ${options.apiKey}") { return 401; }` : ''}
      grpc_pass grpc://${options.upstream};
    }
  }
}
`;
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, config);
  const child: ChildProcess = spawn(nginxPath(), ['-p', dir, '-c', file], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const log = () => {
    let errors = '';
    try {
      errors = readFileSync(join(dir, 'error.log'), 'utf8');
    } catch {
      // not written yet
    }
    return stderr + errors;
  };
  await withTimeout(
    (async () => {
      for (;;) {
        if (child.exitCode !== null) throw new Error(`nginx exited: ${log()}`);
        if (log().includes('start worker process') || (await listening(port))) return;
        await new Promise((r) => setTimeout(r, 50));
      }
    })(),
    10_000,
    'nginx start-up',
  );
  return {
    address: `127.0.0.1:${port}`,
    log,
    async stop() {
      process.removeListener('exit', reap);
      child.kill('SIGTERM');
      await withTimeout(exited, 5000, 'nginx stop').catch(() => child.kill('SIGKILL'));
    },
  };
}

async function listening(port: number): Promise<boolean> {
  const { connect } = await import('node:net');
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
