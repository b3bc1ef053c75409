/**
 * The plugin gives a user's own Worker what `ckpt worker` has: the pipeline's activities, and a heartbeat
 * throttle of a second, so that a stop, cancel, terminate or reset reaches a running segment within about
 * a second (HEARTBEAT_THROTTLE; test/temporal/cancel.test.ts measures it end to end). No server needed.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { WorkerOptions } from '@temporalio/worker';
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
