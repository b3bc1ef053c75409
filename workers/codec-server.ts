/**
 * A codec server for the Temporal Web UI and CLI (`ckpt codec-server`): the UI sends the payloads of a
 * history it shows to POST /decode and shows what comes back, so people who may read the pipelines' inputs
 * and results see them while the history itself stays encrypted. POST /encode does the reverse (the UI's
 * signal and query inputs). Payloads travel in Temporal's JSON form: metadata values and data in base64.
 *
 * The browser calls it from the UI's origin, so it answers CORS for the origins it is given (with
 * credentials: the UI can forward the user's token); with `auth` set, a request whose Authorization
 * header is not exactly that value is refused (401) before any payload is read. Like the metrics, it
 * listens on this host only unless told otherwise.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Payload, PayloadCodec } from '@temporalio/common';
import { DEFAULT_METRICS_HOST } from './metrics';

export interface CodecServerOptions {
  codec: PayloadCodec;
  port: number;
  host?: string;
  /** Origins allowed to call from a browser (the Web UI's address). */
  origins: string[];
  /** The Authorization header value required; unset: none. */
  auth?: string;
}

export interface CodecServer {
  url: string;
  close(): Promise<void>;
}

interface JsonPayload {
  metadata?: Record<string, string>;
  data?: string;
}

const fromJson = (p: JsonPayload): Payload => ({
  metadata: Object.fromEntries(
    Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')]),
  ),
  data: Buffer.from(p.data ?? '', 'base64'),
});

const toJson = (p: Payload): JsonPayload => ({
  metadata: Object.fromEntries(
    Object.entries(p.metadata ?? {}).map(([k, v]) => [
      k,
      Buffer.from(v ?? new Uint8Array()).toString('base64'),
    ]),
  ),
  data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
});

/** Compared in constant time: how long a refusal takes says nothing about how much of the value matched. */
function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function cors(req: IncomingMessage, res: ServerResponse, origins: string[]): void {
  const origin = req.headers.origin;
  if (origin && origins.includes(origin)) {
    res.setHeader('access-control-allow-origin', origin);
    res.setHeader('access-control-allow-credentials', 'true');
    res.setHeader('access-control-allow-methods', 'POST, OPTIONS');
    res.setHeader('access-control-allow-headers', 'content-type, x-namespace, authorization');
    res.setHeader('vary', 'origin');
  }
}

async function handle(req: IncomingMessage, res: ServerResponse, options: CodecServerOptions): Promise<void> {
  cors(req, res, options.origins);
  if (req.method === 'OPTIONS') return void res.writeHead(204).end();
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'POST' || (path !== '/decode' && path !== '/encode')) {
    return void res.writeHead(404, { 'content-type': 'text/plain' }).end('POST /decode or /encode\n');
  }
  if (options.auth !== undefined && !sameSecret(req.headers.authorization ?? '', options.auth)) {
    return void res.writeHead(401, { 'content-type': 'text/plain' }).end('unauthorized\n');
  }
  let payloads: Payload[];
  try {
    payloads = ((JSON.parse(await body(req)) as { payloads?: JsonPayload[] }).payloads ?? []).map(fromJson);
  } catch {
    return void res
      .writeHead(400, { 'content-type': 'text/plain' })
      .end('body must be {"payloads": [...]}\n');
  }
  try {
    const out =
      path === '/decode' ? await options.codec.decode(payloads) : await options.codec.encode(payloads);
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ payloads: out.map(toJson) }));
  } catch (err) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end(`${(err as Error).message}\n`);
  }
}

export async function serveCodec(options: CodecServerOptions): Promise<CodecServer> {
  const server: Server = createServer((req, res) => {
    handle(req, res, options).catch((err: Error) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`${err.message}\n`);
    });
  });
  const host = options.host ?? DEFAULT_METRICS_HOST;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(new Error(`codec server: cannot listen on ${host}:${options.port}: ${err.message}`)),
    );
    server.listen(options.port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${address.address}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
