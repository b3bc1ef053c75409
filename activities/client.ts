/** A Temporal client from the typed settings (activities use it to reach their pipeline; so does the CLI). */
import { Client, Connection } from '@temporalio/client';
import type { TemporalSettings } from '../temporal.config';

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
  const connection = await Connection.connect({ address, tls, apiKey, metadata, connectTimeout: 10_000 });
  return new Client({ connection, namespace: settings.namespace });
}
