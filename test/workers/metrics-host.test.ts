/**
 * A worker's metrics endpoint listens on this host only (127.0.0.1) unless its operator names another
 * address: metrics name directories, programs and hosts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { DEFAULT_METRICS_HOST, serveMetrics } from '../../workers/metrics';
import { loadConfig } from '../../temporal.config';

describe('metrics endpoint address', () => {
  it('binds 127.0.0.1 by default, and only there', async () => {
    assert.equal(DEFAULT_METRICS_HOST, '127.0.0.1');
    const server = await serveMetrics(new Registry(), 0);
    try {
      assert.equal(server.host, '127.0.0.1');
      assert.equal((await fetch(`http://127.0.0.1:${server.port}/metrics`)).status, 200);
      // Another loopback address of this host is another interface address: nothing listens there.
      await assert.rejects(fetch(`http://127.0.0.2:${server.port}/metrics`));
    } finally {
      await server.close();
    }
  });

  it('binds the address it is given', async () => {
    const server = await serveMetrics(new Registry(), 0, '127.0.0.2');
    try {
      assert.equal(server.host, '127.0.0.2');
      assert.equal((await fetch(`http://127.0.0.2:${server.port}/metrics`)).status, 200);
      await assert.rejects(fetch(`http://127.0.0.1:${server.port}/metrics`));
    } finally {
      await server.close();
    }
  });

  it('CKPT_METRICS_HOST sets it; unset leaves the default', () => {
    assert.equal(loadConfig({ CKPT_METRICS_HOST: '0.0.0.0' }).metricsHost, '0.0.0.0');
    assert.equal(loadConfig({}).metricsHost, undefined);
  });
});
