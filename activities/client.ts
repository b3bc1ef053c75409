/** A Temporal client from the typed settings (activities use it to reach their pipeline; so does the CLI). */
import { Client, Connection } from '@temporalio/client';
import { CheckpointError } from '../checkpoint/errors';
import type { TemporalSettings } from '../temporal.config';
import { diagnoseConnection, type ConnectAttempt } from './connection-diagnosis';
import { codecConverter } from './payload-codec';

/**
 * How long a connection to the Temporal server may take. The SDK retries a refused connection until its
 * deadline and then says only "Failed to connect before the deadline": a wrong address cost 10 s and never
 * named itself. A reachable server answers in milliseconds, a remote one with TLS well within this.
 */
export const CONNECT_TIMEOUT_MS = 3000;

/**
 * The Temporal server could not be reached (nothing listens at the address, a name that does not resolve,
 * a TLS or API-key refusal). Exit 1; retryable: a server that is down now may be up on the next attempt.
 */
export class TemporalConnectionError extends CheckpointError {
  override readonly exitCode = 1 as const;
  static override readonly retryable = true;
}

/** The part of an SDK connection error that says what went wrong (the native one nests it). */
function reason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const inner = /message: "([^"]+)"/.exec(message)?.[1];
  return (inner ?? message).replace(/\s*\n\s*/g, ' ');
}

/**
 * The typed error for a failed connection to `address` (also for the worker's native connection): what
 * the SDK said, and why when the settings or a TLS handshake tell (connection-diagnosis.ts).
 */
export async function connectionError(
  attempt: ConnectAttempt,
  namespace: string,
  err: unknown,
): Promise<TemporalConnectionError> {
  const why = await diagnoseConnection(attempt, err);
  return new TemporalConnectionError(
    `cannot connect to the Temporal server at ${attempt.address} (namespace ${namespace}): ${reason(err)}; ` +
      (why ?? 'is it running there? (TEMPORAL_ADDRESS sets the address)'),
    { field: why ? 'TEMPORAL_TLS' : 'TEMPORAL_ADDRESS', cause: err },
  );
}

export async function connectClient(settings: TemporalSettings): Promise<Client> {
  const { address, tls, apiKey, metadata } = settings.connect.connectionOptions as {
    address?: string;
    tls?: Parameters<typeof Connection.connect>[0] extends infer O
      ? O extends { tls?: infer T }
        ? T
        : never
      : never;
    apiKey?: string;
    metadata?: Record<string, string>;
  };
  try {
    const connection = await Connection.connect({
      address,
      tls,
      apiKey,
      metadata,
      connectTimeout: CONNECT_TIMEOUT_MS,
    });
    return new Client({ connection, namespace: settings.namespace, ...codecConverter(settings.codecKeys) });
  } catch (err) {
    throw await connectionError(
      { address: address ?? 'localhost:7233', tls: tls as ConnectAttempt['tls'], apiKey },
      settings.namespace,
      err,
    );
  }
}
