/**
 * The plugin gives a user's own Worker what `ckpt worker` has: the pipeline's activities, and a heartbeat
 * throttle of a second, so that a stop, cancel, terminate or reset reaches a running segment within about
 * a second (HEARTBEAT_THROTTLE; test/temporal/cancel.test.ts measures it end to end), and payload
 * encryption on the Worker and the Client when it has keys. No server needed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { ClientOptions } from '@temporalio/client';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import type { WorkerOptions } from '@temporalio/worker';
import { EncryptionCodec } from '../../activities/payload-codec';
import { trainingPlugin } from '../../workers/plugin';
import { HEARTBEAT_THROTTLE } from '../../workers/worker';

const base = { taskQueue: 'q' } as WorkerOptions;

describe('the plugin sets the heartbeat throttle', () => {
  it("a worker that sets none gets the package's (1 s), besides the activities", () => {
    const options = trainingPlugin({ role: 'train', warmChild: false }).configureWorker(base);
    assert.equal(options.maxHeartbeatThrottleInterval, HEARTBEAT_THROTTLE.maxHeartbeatThrottleInterval);
    assert.equal(
      options.defaultHeartbeatThrottleInterval,
      HEARTBEAT_THROTTLE.defaultHeartbeatThrottleInterval,
    );
    assert.equal(HEARTBEAT_THROTTLE.maxHeartbeatThrottleInterval, '1s');
    assert.ok('trainSegment' in (options.activities as object));
  });

  it("a worker's own setting wins", () => {
    const options = trainingPlugin({ role: 'train', warmChild: false }).configureWorker({
      ...base,
      maxHeartbeatThrottleInterval: '5s',
    });
    assert.equal(options.maxHeartbeatThrottleInterval, '5s');
    assert.equal(options.defaultHeartbeatThrottleInterval, '1s');
  });
});

describe('the plugin encrypts payloads when it has keys', () => {
  const keys = { active: 'k1', keys: { k1: randomBytes(32) } };

  it("on the Worker and the Client, after the user's own codecs; a round trip decrypts", async () => {
    const own = { encode: async (p: Payload[]) => p, decode: async (p: Payload[]) => p };
    const plugin = trainingPlugin({ role: 'train', warmChild: false, codecKeys: keys });
    const worker = plugin.configureWorker({ ...base, dataConverter: { payloadCodecs: [own] } });
    const codecs = worker.dataConverter!.payloadCodecs!;
    assert.equal(codecs[0], own);
    assert.ok(codecs[1] instanceof EncryptionCodec);
    const client = plugin.configureClient({} as ClientOptions);
    const codec = client.dataConverter!.payloadCodecs![0]!;
    assert.ok(codec instanceof EncryptionCodec);
    const payload = defaultPayloadConverter.toPayload({ dir: '/runs/x' });
    const [sealed] = await codec.encode([payload]);
    assert.ok(!Buffer.from(sealed!.data!).toString('latin1').includes('/runs/x'));
    assert.deepEqual(defaultPayloadConverter.fromPayload((await codec.decode([sealed!]))[0]!), {
      dir: '/runs/x',
    });
  });

  it('takes the keys from the environment by default; codecKeys: false or no keys: none', () => {
    const saved = process.env.CKPT_CODEC_KEYS;
    try {
      process.env.CKPT_CODEC_KEYS = `env-key:${randomBytes(32).toString('base64')}`;
      const fromEnv = trainingPlugin({ role: 'train', warmChild: false }).configureWorker(base);
      assert.ok(fromEnv.dataConverter!.payloadCodecs![0] instanceof EncryptionCodec);
      const off = trainingPlugin({ role: 'train', warmChild: false, codecKeys: false }).configureWorker(base);
      assert.equal(off.dataConverter, undefined);
      delete process.env.CKPT_CODEC_KEYS;
      assert.equal(
        trainingPlugin({ role: 'train', warmChild: false }).configureWorker(base).dataConverter,
        undefined,
      );
    } finally {
      if (saved === undefined) delete process.env.CKPT_CODEC_KEYS;
      else process.env.CKPT_CODEC_KEYS = saved;
    }
  });
});
