/**
 * Connections to Temporal through TLS, for real: nginx (Debian's package) terminates TLS in front of the dev
 * server, requires a client certificate from the test CA (mTLS) and an API key; the certificates are made
 * by openssl for this test. `ckpt worker`, the CLI and a user's Worker with the plugin connect with one
 * envconfig profile (server CA, client certificate and key, server name, API key), and a pipeline runs
 * end to end through the proxy. A wrong CA, a wrong server name, a missing or expired client certificate
 * and a wrong API key are each refused with exit 1 and a message that says which.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NativeConnection, Worker } from '@temporalio/worker';
import { loadTemporalSettings } from '../../temporal.config';
import { trainingPlugin } from '../../workers/plugin';
import { temporalEnv, type TemporalTestEnv } from '../helpers/temporal';
import { makeCertificates, startTlsProxy, type TestCertificates, type TlsProxy } from '../helpers/tls';

const API_KEY = 'tls-test-api-key';
const T = temporalEnv('tls');
let env: TemporalTestEnv;
let certs: TestCertificates;
let proxy: TlsProxy;

interface Profile {
  ca?: string;
  cert?: string;
  key?: string;
  serverName?: string;
  apiKey?: string;
}

/** Environment that connects through `profile`, written as a TOML profile the way the Temporal CLI reads it. */
function profileEnv(name: string, profile: Profile): NodeJS.ProcessEnv {
  const file = join(certs.dir, `${name}.toml`);
  const tls = [
    profile.ca && `server_ca_cert_path = ${JSON.stringify(profile.ca)}`,
    profile.cert && `client_cert_path = ${JSON.stringify(profile.cert)}`,
    profile.key && `client_key_path = ${JSON.stringify(profile.key)}`,
    profile.serverName && `server_name = ${JSON.stringify(profile.serverName)}`,
  ].filter(Boolean);
  writeFileSync(
    file,
    [
      `[profile.${name}]`,
      `address = ${JSON.stringify(proxy.address)}`,
      'namespace = "default"',
      ...(profile.apiKey ? [`api_key = ${JSON.stringify(profile.apiKey)}`] : []),
      `[profile.${name}.tls]`,
      ...tls,
      '',
    ].join('\n'),
  );
  // The test environment's TEMPORAL_ADDRESS (the plain dev server) would win over the file: point it at
  // the proxy too.
  return { TEMPORAL_CONFIG_FILE: file, TEMPORAL_PROFILE: name, TEMPORAL_ADDRESS: proxy.address };
}

const good = (): Profile => ({
  ca: certs.ca,
  cert: certs.clientCert,
  key: certs.clientKey,
  serverName: certs.serverName,
  apiKey: API_KEY,
});

before(async () => {
  env = await T.start();
  certs = makeCertificates(join(env.dir, 'tls'));
  proxy = await startTlsProxy({ upstream: env.address, certs, mutual: true, apiKey: API_KEY });
});
after(async () => {
  await proxy?.stop();
});

const noopPipeline = (tag: string) => [
  'pipeline',
  'start',
  `--root=${join(env.dir, 'runs')}`,
  `--tag=${tag}`,
  '--steps=4',
  '--segment-steps=2',
  '--noop',
  '--wait',
];

describe('a pipeline through TLS with a client certificate and an API key', () => {
  it('ckpt worker and the CLI connect with the profile, and the pipeline completes', async () => {
    const tlsEnv = profileEnv('good', good());
    const worker = await env.startWorker('all', { env: tlsEnv });
    try {
      const run = await env.ckpt(noopPipeline('tls'), { env: tlsEnv, timeoutMs: 60_000 });
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, /completed\s+step 4\/4/);
    } finally {
      await worker.stop();
    }
  });

  it("a user's Worker with the plugin connects with the same profile", async () => {
    const tlsEnv = profileEnv('plugin', good());
    const settings = loadTemporalSettings({ ...env.env, ...tlsEnv });
    const connection = await NativeConnection.connect(settings.connect.connectionOptions);
    const queue = `tls-plugin-${process.pid}`;
    try {
      const worker = await Worker.create({
        connection,
        taskQueue: queue,
        plugins: [
          trainingPlugin({ role: 'all', warmChild: false, allowedRoots: { checkpoints: [env.dir] } }),
        ],
      });
      const run = await worker.runUntil(
        env.ckpt(noopPipeline('plugin'), {
          env: { ...tlsEnv, CKPT_TASK_QUEUE_TRAIN: queue, CKPT_TASK_QUEUE_CONTROL: queue },
          timeoutMs: 60_000,
        }),
      );
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, /completed\s+step 4\/4/);
    } finally {
      await connection.close();
    }
  });
});

describe('refused connections say why, exit 1', () => {
  const cases: Array<[string, () => Profile, RegExp]> = [
    [
      'a server certificate from another CA',
      () => ({ ...good(), ca: certs.otherCa }),
      /the server's certificate is not signed by the configured server CA/,
    ],
    [
      'a server name the certificate is not for',
      () => ({ ...good(), serverName: 'wrong.test' }),
      /the server's certificate is not for the server name "wrong\.test"/,
    ],
    [
      'no client certificate',
      () => ({ ...good(), cert: undefined, key: undefined }),
      /the server requires a client certificate \(mTLS\) and none is configured/,
    ],
    [
      'an expired client certificate',
      () => ({ ...good(), cert: certs.expiredClientCert }),
      /the client certificate \(CN=ckpt worker\) expired on 2020-02-01/,
    ],
    [
      'a wrong API key',
      () => ({ ...good(), apiKey: 'not-the-key' }),
      /the server refused the credentials: a missing or wrong API key/,
    ],
  ];

  for (const [what, profile, reason] of cases) {
    it(what, async () => {
      const res = await env.ckpt(['pipeline', 'status', 'any-id'], {
        env: profileEnv(what.replace(/\W+/g, '-'), profile()),
        timeoutMs: 30_000,
      });
      assert.equal(res.code, 1, res.stderr);
      assert.match(res.stderr, new RegExp(`cannot connect to the Temporal server at ${proxy.address}`));
      assert.match(res.stderr, reason);
    });
  }

  it('ckpt worker too (its native connection): a wrong CA, exit 1', async () => {
    const res = await env.ckpt(['worker', '--role', 'control'], {
      env: profileEnv('worker-other-ca', { ...good(), ca: certs.otherCa }),
      timeoutMs: 30_000,
    });
    assert.equal(res.code, 1, res.stderr);
    assert.match(res.stderr, /the server's certificate is not signed by the configured server CA/);
  });
});
