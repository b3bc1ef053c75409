/**
 * Why a connection to Temporal failed, in words an operator can act on. The SDK's JavaScript client says
 * only "Failed to connect before the deadline" when a TLS handshake fails, and a gRPC status without its
 * cause when a server or a TLS proxy refuses the client's certificate or API key. So the settings are
 * checked here (a client certificate that has expired), the error is read for what it does say (a
 * status 400/401, the native client's certificate errors), and when that is not enough, one TLS handshake
 * with the same settings (node:tls) names the problem: a CA that did not sign the server's certificate,
 * a server name it is not for, an expired server certificate.
 */
import { X509Certificate } from 'node:crypto';
import { connect, type ConnectionOptions } from 'node:tls';

/** The TLS part of the SDK's connection options (envconfig's profile, TEMPORAL_TLS_*). */
export interface ClientTls {
  serverRootCACertificate?: Buffer;
  serverNameOverride?: string;
  clientCertPair?: { crt: Buffer; key: Buffer };
}

export interface ConnectAttempt {
  address: string;
  tls?: boolean | ClientTls | null;
  apiKey?: string;
}

const PROBE_TIMEOUT_MS = 3000;

function certificateDates(pem: Buffer): { subject: string; validFrom: Date; validTo: Date } | undefined {
  try {
    const cert = new X509Certificate(pem);
    return {
      subject: cert.subject.replace(/\n/g, ', '),
      validFrom: new Date(cert.validFrom),
      validTo: new Date(cert.validTo),
    };
  } catch {
    return undefined;
  }
}

/** What the error text itself says (the native client's and the gRPC status's words). */
function fromError(text: string, tls: ClientTls | undefined): string | undefined {
  if (/UnknownIssuer|unknown ca|unable to (get|verify)|self.signed/i.test(text))
    return "TLS: the server's certificate is not signed by the configured server CA (server_ca_cert_path, TEMPORAL_TLS_SERVER_CA_CERT_PATH)";
  if (/NotValidForName|altname|does not match certificate/i.test(text))
    return `TLS: the server's certificate is not for the server name${tls?.serverNameOverride ? ` "${tls.serverNameOverride}"` : ''} (server_name, TEMPORAL_TLS_SERVER_NAME)`;
  if (/\b401\b|UNAUTHENTICATED/i.test(text))
    return 'the server refused the credentials: a missing or wrong API key (api_key, TEMPORAL_API_KEY)';
  if (/\b403\b|PERMISSION_DENIED/i.test(text))
    return 'the server refused this client: its API key or certificate is not allowed this namespace';
  // A TLS-terminating proxy that refuses a client certificate answers HTTP 400 after the handshake.
  if (tls && /\b400\b/.test(text)) {
    return tls.clientCertPair
      ? 'the server refused the client certificate: expired, or not from a CA the server trusts (client_cert_path, TEMPORAL_TLS_CLIENT_CERT_PATH)'
      : 'the server requires a client certificate (mTLS) and none is configured (client_cert_path and client_key_path, TEMPORAL_TLS_CLIENT_CERT_PATH and _KEY_PATH)';
  }
  return undefined;
}

/** One TLS handshake with the client's settings; the reason it fails, or undefined when it succeeds. */
function probe(address: string, tls: ClientTls): Promise<string | undefined> {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon);
  const options: ConnectionOptions = {
    host,
    port: Number(address.slice(colon + 1)),
    servername: tls.serverNameOverride ?? host,
    ca: tls.serverRootCACertificate,
    cert: tls.clientCertPair?.crt,
    key: tls.clientCertPair?.key,
    ALPNProtocols: ['h2'],
  };
  return new Promise((resolve) => {
    const socket = connect(options);
    const done = (reason: string | undefined) => {
      socket.destroy();
      resolve(reason);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done(undefined));
    socket.once('secureConnect', () => done(undefined));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') done(fromError('altname', tls));
      else if (code === 'CERT_HAS_EXPIRED') done("TLS: the server's certificate has expired");
      else if (/UNABLE_TO|SELF_SIGNED|UNKNOWN_CA/i.test(code)) done(fromError('unknown ca', tls));
      else if (code === 'ECONNREFUSED') done(undefined);
      else done(`TLS: ${err.message}`);
    });
  });
}

/**
 * A sentence saying why the connection failed, or undefined when nothing more is known than the SDK's
 * error (then the address is the likely cause).
 */
export async function diagnoseConnection(attempt: ConnectAttempt, err: unknown): Promise<string | undefined> {
  const tls = typeof attempt.tls === 'object' && attempt.tls ? attempt.tls : undefined;
  const now = new Date();
  const client = tls?.clientCertPair ? certificateDates(tls.clientCertPair.crt) : undefined;
  if (client && client.validTo < now)
    return `the client certificate (${client.subject}) expired on ${client.validTo.toISOString()} (client_cert_path, TEMPORAL_TLS_CLIENT_CERT_PATH)`;
  if (client && client.validFrom > now)
    return `the client certificate (${client.subject}) is not valid before ${client.validFrom.toISOString()}`;
  const text = [err, (err as { cause?: unknown })?.cause]
    .map((e) =>
      e instanceof Error ? `${e.message} ${(e as { details?: string }).details ?? ''}` : String(e ?? ''),
    )
    .join(' ');
  const said = fromError(text, tls);
  if (said || !attempt.tls) return said;
  return probe(attempt.address, tls ?? {});
}
