/**
 * Records the workflow histories that test/temporal/replay.test.ts replays against the current workflow
 * code (test/fixtures/histories/*.json).
 *
 *   node --import tsx scripts/record-history.ts
 *
 * Run it once per deliberate, *incompatible* workflow change (a new version of the workflow that old runs
 * must not continue), and commit its output. Any other change to workflow code must keep the recorded
 * histories replayable: guard changed code paths with `patched('some-change-id')` from
 * @temporalio/workflow (and later `deprecatePatch`), so that runs started by the old code continue on the
 * new workers. Re-recording to make the replay test pass again hides exactly the bug that test exists to
 * catch.
 *
 * What it records: one trainingPipeline on a fresh dev server, with in-process workers, that trains a small
 * model to step 12 in segments of 4 with evaluation and retention (keep last 2), receives a setTargetSteps
 * update (8 → 12) and a pause and resume signal, and continues as new after 2 segments: two runs, two
 * files (the run that continued as new, the run that completed). The checkpoint directory is relative to
 * the workers' working directory (a temp dir), and the client and workers have fixed identities, so no
 * machine-specific path or host name ends up in the files.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { workflowSettings } from '../cli/temporal-client';
import { startDevServer } from '../infra/temporal';
import { historyToJSON, type History } from '../test/helpers/history';
import { loadConfig } from '../temporal.config';
import { createWorkers } from '../workers/worker';
import type { PipelineInput, PipelineState } from '../workflows/pipeline';

const OUT = join(__dirname, '..', 'test', 'fixtures', 'histories');
const PREFIX = 'training-pipeline';
const IDENTITY = 'record-history';

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'ckpt-record-history-'));
  const server = await startDevServer();
  try {
    const temporal = loadConfig({
      TEMPORAL_ADDRESS: server.address,
      CKPT_TASK_QUEUE_TRAIN: 'record-history-train',
      CKPT_TASK_QUEUE_CONTROL: 'record-history-control',
      CKPT_HEARTBEAT_TIMEOUT: '10s',
      CKPT_RETRY_INITIAL: '200ms',
      CKPT_RETRY_MAX: '2s',
    }).temporal;
    const workerConnection = await NativeConnection.connect({ address: server.address });
    const workers = await createWorkers(
      { role: 'all', settings: temporal, identity: IDENTITY },
      workerConnection,
    );
    // Activities run `ckpt train --dir <relative dir>` in children that inherit this working directory
    // (changed only now: the workflow threads, started above, load tsx relative to the first one).
    process.chdir(work);
    const running = Promise.all(workers.map((w) => w.run()));
    const connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection, namespace: temporal.namespace, identity: IDENTITY });
    try {
      const input: PipelineInput = {
        dir: join('checkpoints', 'base_checkpoints', 'd1'),
        targetSteps: 8,
        segmentSteps: 4,
        saveEvery: 4,
        flags: { depth: 1, nEmbd: 32, seqLen: 32, batch: 4 },
        evaluate: true,
        retention: { keepLast: 2 },
        segmentsPerRun: 2,
        settings: workflowSettings(temporal),
      };
      const handle = await client.workflow.start('trainingPipeline', {
        taskQueue: temporal.taskQueues.control,
        workflowId: 'record-history-pipeline',
        args: [input],
        workflowExecutionTimeout: '10m',
      });
      await handle.executeUpdate<PipelineState, [number]>('setTargetSteps', { args: [12] });
      await handle.signal('pause');
      await handle.signal('resume');
      const result = (await handle.result()) as PipelineState;
      if (result.state !== 'completed' || result.step !== 12 || result.runs !== 2) {
        throw new Error(`unexpected result: ${JSON.stringify(result)}`);
      }

      // Follow the chain of runs from the first one.
      const files: Array<[string, string]> = [];
      let runId: string | undefined = handle.firstExecutionRunId;
      for (let run = 1; runId; run++) {
        const history: History = await client.workflow.getHandle(handle.workflowId, runId).fetchHistory();
        const next: string | undefined =
          history.events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ??
          undefined;
        files.push([
          `${PREFIX}-run${run}-${next ? 'continued-as-new' : 'completed'}.json`,
          historyToJSON(history),
        ]);
        runId = next;
      }
      mkdirSync(OUT, { recursive: true });
      for (const name of readdirSync(OUT)) if (name.startsWith(`${PREFIX}-`)) rmSync(join(OUT, name));
      for (const [name, json] of files) {
        writeFileSync(join(OUT, name), JSON.stringify(JSON.parse(json), null, 2) + '\n');
        process.stderr.write(`wrote ${join('test', 'fixtures', 'histories', name)}\n`);
      }
    } finally {
      workers.forEach((w) => w.shutdown());
      await running;
      await connection.close();
      await workerConnection.close();
    }
  } finally {
    await server.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`record-history: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
