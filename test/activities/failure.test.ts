/**
 * Which failures Temporal retries is decided once, by the error's class (`retryable`, checkpoint/errors.ts):
 * the table of decisions, the Temporal failure an activity throws for an error raised in the worker, and the
 * one it throws for a `ckpt` child that reported its error (activities/failure.ts). The children are real
 * `ckpt` processes; the S3 endpoint that is down is a closed port.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { ApplicationFailure } from '@temporalio/common';
import { listCheckpoints } from '../../activities';
import { prewarmChild, runCkpt, standbyPid } from '../../activities/child';
import { activityFailure, childFailure } from '../../activities/failure';
import * as client from '../../activities/client';
import * as args from '../../cli/args';
import {
  configureS3,
  errorClasses,
  isRetryable,
  saveCheckpoint,
  SchemaError,
  TransientStoreError,
} from '../../checkpoint';
import { freePort } from '../../infra/temporal';
import { BackendUnavailableError } from '../../model/errors';
import { ERROR_CLASSES, NON_RETRYABLE_ERRORS } from '../../temporal.config';
import { RendezvousError } from '../../train/dist/errors';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';
import { tempDir } from '../helpers/tmp';

/** The decision for every error class: a new class fails the first test until it is added here. */
const EXPECTED: Record<string, boolean> = {
  // Bad input or usage: the same input fails the same way.
  CheckpointError: false,
  InvalidArgumentError: false,
  UsageError: false,
  ConfigError: false,
  ModelInputError: false,
  // Incompatible, corrupt or absent checkpoints: a retry reads the same files.
  WorldSizeMismatchError: false,
  TensorSetMismatchError: false,
  TokenizerMismatchError: false,
  SafetensorsError: false,
  IntegrityError: false,
  SchemaError: false,
  NotCommittedError: false,
  NoCheckpointError: false,
  // Another writer got there first: nothing to redo.
  AlreadyCommittedError: false,
  // A program's files that break the contract (`ckpt commit`) are refused again.
  CommitRefusedError: false,
  // A store that refuses (permissions, no bucket) keeps refusing; one that failed for a passing reason may not.
  StoreError: false,
  AccessDeniedError: false,
  TransientStoreError: true,
  // A location outside a worker's allowed roots is refused by every worker.
  OutsideAllowedRootsError: false,
  // Races with a pruner, leases, commits that timed out: a retry looks again.
  MissingFileError: true,
  LeaseLostError: true,
  CommitTimeoutError: true,
  // Another run writes the directory, or took it over: a retry meets the same writer.
  WriterConflictError: false,
  WriterFencedError: false,
  // A lease that ran out, a file of a crashed attempt under a rank's name: the next attempt takes a new
  // lease and its rank 0 clears the step.
  WriterLeaseExpiredError: true,
  FileConflictError: true,
  // This worker lacks the backend; another may have it.
  BackendUnavailableError: true,
  // A peer died or went silent: the group is retried; a collective called wrongly is a bug.
  DistributedError: true,
  RendezvousError: true,
  PeerLostError: true,
  CollectiveTimeoutError: true,
  CollectiveAbortedError: true,
  ProcessGroupBrokenError: true,
  CollectiveMismatchError: false,
  ProcessGroupClosedError: false,

  ProgramMismatchError: false,
  ProgramContractError: false,
  ProgramConfigError: false,
  ProgramLoadError: false,
  ProgramNotRegisteredError: false,
  // A command program that exits 2 says retrying cannot help; a crash or a kill may pass.
  CommandFailedError: false,
  CommandCrashedError: true,

  NotFoundError: false,
  TemporalConnectionError: true,
};

describe('the retry table: every error class says whether retrying can help', () => {
  it('every error class of the library and the CLI has the expected decision', () => {
    const classes = [...ERROR_CLASSES, ...errorClasses(args, client)];
    const decisions = Object.fromEntries(classes.map((c) => [c.name, c.retryable]));
    assert.deepEqual(decisions, EXPECTED);
  });

  it('NON_RETRYABLE_ERRORS (the workflows’ nonRetryableErrorTypes) is the classes that say no', () => {
    const cliOnly = ['UsageError', 'NotFoundError'];
    const no = Object.keys(EXPECTED).filter((name) => !EXPECTED[name] && !cliOnly.includes(name));
    assert.deepEqual([...NON_RETRYABLE_ERRORS].sort(), no.sort());
    assert.ok(NON_RETRYABLE_ERRORS.includes('SchemaError'));
    assert.ok(!NON_RETRYABLE_ERRORS.includes('BackendUnavailableError'));
    assert.ok(!NON_RETRYABLE_ERRORS.includes('TransientStoreError'));
  });

  it('a rendezvous error decides by its cause; an error outside the hierarchy is retryable', () => {
    assert.equal(new RendezvousError('timeout', 'ranks did not meet').retryable, true);
    assert.equal(new RendezvousError('duplicate-rank', 'rank 1 twice').retryable, false);
    assert.equal(isRetryable(new Error('socket hang up')), true);
    assert.equal(isRetryable(new args.UsageError('bad flag')), false);
  });
});

describe('an error in the worker (control activities) becomes a failure of its own type', () => {
  it('a SchemaError is non-retryable, a BackendUnavailableError retryable', () => {
    const schema = activityFailure(new SchemaError('manifest_000010.json: not valid JSON'));
    assert.ok(schema instanceof ApplicationFailure);
    assert.equal(schema.type, 'SchemaError');
    assert.equal(schema.nonRetryable, true);
    assert.equal(schema.message, 'manifest_000010.json: not valid JSON');
    const backend = activityFailure(new BackendUnavailableError('tensorflow-gpu', 'no GPU here'));
    assert.ok(backend instanceof ApplicationFailure);
    assert.equal(backend.type, 'BackendUnavailableError');
    assert.equal(backend.nonRetryable, false);
  });

  describe('with an S3 endpoint that is down', () => {
    before(async () => {
      const port = await freePort();
      configureS3({
        endpoint: `http://127.0.0.1:${port}`,
        region: 'us-east-1',
        credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
        maxAttempts: 1,
      });
    });
    after(() => configureS3());

    it('listCheckpoints fails with a retryable TransientStoreError', async () => {
      const err = await listCheckpoints({ dir: 's3://bucket/base/d1' }).then(
        () => assert.fail('listing a closed port succeeded'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof ApplicationFailure, String(err));
      assert.equal(err.type, 'TransientStoreError');
      assert.equal(err.nonRetryable, false);
      assert.ok(err.cause instanceof TransientStoreError, 'the original error is the cause');
    });
  });
});

describe('a failed ckpt child becomes a failure of the type it reported', () => {
  after(() => {
    // runCkpt starts the next standby when a command is done; it must not outlive this file.
    const pid = standbyPid();
    if (pid) process.kill(pid, 'SIGKILL');
  });

  it('a schema error in the child (through the warm standby): non-retryable, type SchemaError', async () => {
    const dir = tempDir();
    await saveCheckpoint(dir, 10, {
      model: tinyModel(1),
      optimizer: tinyOptimizer(1),
      meta: tinyMeta({ seed: 1 }),
    });
    writeFileSync(`${dir}/manifest_000010.json`, '{ not json');
    prewarmChild();
    const result = await runCkpt(['eval', dir, '--step', '10', '--json']);
    assert.equal(result.code, 1, 'exit code 1: a check failed');
    assert.match(result.stderrTail, /manifest_000010\.json: not valid JSON/, 'the human line stays');
    const failure = childFailure('evaluating step 10', result);
    assert.equal(failure.type, 'SchemaError');
    assert.equal(failure.nonRetryable, true);
    assert.match(
      failure.message,
      /^evaluating step 10 failed \(exit 1\): manifest_000010\.json: not valid JSON/,
    );
  });

  it('a store that is down in the child stays retryable, type TransientStoreError', async () => {
    const port = await freePort();
    const result = await runCkpt(['eval', 's3://bucket/base/d1', '--step', '10', '--json'], {
      env: {
        AWS_ENDPOINT_URL: `http://127.0.0.1:${port}`,
        AWS_ACCESS_KEY_ID: 'test',
        AWS_SECRET_ACCESS_KEY: 'test',
        AWS_REGION: 'us-east-1',
      },
    });
    assert.equal(result.code, 1, result.stderrTail);
    const failure = childFailure('evaluating step 10', result);
    assert.equal(failure.type, 'TransientStoreError');
    assert.equal(failure.nonRetryable, false);
  });

  it('a child killed by a signal, or gone without a report, is retryable', () => {
    const report = { type: 'error', errorType: 'SchemaError', retryable: false, message: 'x' } as const;
    const killed = childFailure('training', {
      code: null,
      signal: 'SIGKILL',
      stdout: '',
      stderrTail: '',
      error: report,
    });
    assert.equal(killed.type, 'ChildProcessError');
    assert.equal(killed.nonRetryable, false);
    assert.match(killed.message, /\(signal SIGKILL\)/);
    const silent = childFailure('training', { code: 2, signal: null, stdout: '', stderrTail: 'oops' });
    assert.equal(silent.type, 'ChildProcessError');
    assert.equal(silent.nonRetryable, false);
  });
});
