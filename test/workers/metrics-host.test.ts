/**
 * A worker's metrics endpoint listens on this host only (127.0.0.1) unless its operator names another
 * address: metrics name directories, programs and hosts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { DEFAULT_METRICS_HOST, serveMetrics } from '../../workers/metrics';
import { loadConfig } from '../../temporal.config';

/** The endpoint answers at `host` and nothing listens at `other` (another loopback address). */
async function listensOnlyOn(host: string | undefined, expected: string, other: string): Promise<void> {
  const server = await serveMetrics(new Registry(), 0, host);
  try {
    assert.equal(server.host, expected);
    assert.equal((await fetch(`http://${expected}:${server.port}/metrics`)).status, 200);
    await assert.rejects(fetch(`http://${other}:${server.port}/metrics`));
  } finally {
    await server.close();
  }
}

describe('metrics endpoint address', () => {
  it('binds 127.0.0.1 by default, and only there', async () => {
    assert.equal(DEFAULT_METRICS_HOST, '127.0.0.1');
    await listensOnlyOn(undefined, '127.0.0.1', '127.0.0.2');
  });

  it('binds the address it is given', () => listensOnlyOn('127.0.0.2', '127.0.0.2', '127.0.0.1'));

  it('CKPT_METRICS_HOST sets it; unset leaves the default', () => {
    assert.equal(loadConfig({ CKPT_METRICS_HOST: '0.0.0.0' }).metricsHost, '0.0.0.0');
    assert.equal(loadConfig({}).metricsHost, undefined);
  });
});
