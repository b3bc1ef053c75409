/**
 * The main job, end to end on this machine: a real Temporal dev server (unless TEMPORAL_ADDRESS points at
 * one), a worker, and a short durable training pipeline of a small GPT on the local store with evaluation
 * and retention. Prints progress, the Web UI address, the eval results and what retention kept, then
 * checks the checkpoints with the CLI's own tools.
 *
 * Usage: npm run demo [-- --keep]   (--keep leaves the server and Web UI up until Ctrl-C)
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { configureLogging, joinLocation, listCheckpoints } from '../checkpoint';
import { pipelineId, pipelineStatus } from '../cli/pipeline-commands';
import { connectClient, uiLink, workflowSettings } from '../cli/temporal-client';
import { startDevServer, type DevServer } from '../infra/temporal';
import { loadConfig } from '../temporal.config';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { connectWorkerConnection, createWorkers } from '../workers/worker';
import type { PipelineInput, PipelineState } from '../workflows/pipeline';

const keep = process.argv.includes('--keep');
const root = resolve(process.env.DEMO_ROOT ?? 'runs/demo');
const say = (text: string) => process.stdout.write(text + '\n');

async function main(): Promise<void> {
  const started = Date.now();
  let server: DevServer | undefined;
  if (!process.env.TEMPORAL_ADDRESS) {
    say('== starting a Temporal dev server (the Temporal CLI is installed first if missing)');
    server = await startDevServer({});
    process.env.TEMPORAL_ADDRESS = server.address;
    process.env.CKPT_UI_ADDRESS = server.uiAddress;
  }
  process.env.CKPT_HEARTBEAT_TIMEOUT ??= '10s';
  // The demo's worker acts on the demo's root only (docs/security.md).
  process.env.CKPT_ALLOWED_ROOTS ??= root;
  configureLogging({ format: 'text', level: 'warn' });
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const config = loadConfig();
  say(`   server ${config.temporal.connect.connectionOptions.address}, Web UI ${config.temporal.uiAddress}`);

  say('== starting a worker (training + control)');
  const connection = await connectWorkerConnection(config.temporal);
  const workers = await createWorkers(
    { role: 'all', settings: config.temporal, identity: 'demo-worker' },
    connection,
  );
  const running = Promise.all(workers.map((w) => w.run()));

  const dir = joinLocation(root, 'base_checkpoints', 'd2');
  rmSync(dir, { recursive: true, force: true });
  const input: PipelineInput = {
    dir,
    targetSteps: 60,
    segmentSteps: 20,
    saveEvery: 10,
    flags: { depth: 2, seed: 0 },
    evaluate: true,
    metric: { name: 'val_bpb', mode: 'min' },
    retention: { keepLast: 2, keepBest: { k: 1, metric: 'val_bpb', mode: 'min' } },
    settings: workflowSettings(config.temporal),
  };
  const client = await connectClient(config.temporal);
  const id = pipelineId(dir);
  say(`== pipeline ${id}: d2 to step 60 in segments of 20, checkpoint every 10, eval after each segment,`);
  say('   retention keep-last 2 + keep-best 1 by val_bpb');
  await client.workflow.start('trainingPipeline', {
    taskQueue: config.temporal.taskQueues.control,
    workflowId: id,
    args: [input],
    workflowIdConflictPolicy: 'TERMINATE_EXISTING',
  });
  say(`   Web UI: ${uiLink(config.temporal, id)}`);
  let last = '';
  for (;;) {
    const status = await pipelineStatus(client, id);
    const line = `   ${status.state.padEnd(9)} step ${String(status.step).padStart(2)}/60  loss ${status.loss?.toFixed(3) ?? '-'}  segment ${status.segment ?? 0}`;
    if (line !== last) say(line);
    last = line;
    if (status.workflowStatus !== 'RUNNING') break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const result = (await client.workflow.getHandle(id).result()) as PipelineState;

  say('== eval results (val_bpb, lower is better)');
  for (const e of result.evals)
    say(`   step ${String(e.step).padStart(2)}: val_bpb ${e.metrics.val_bpb!.toFixed(4)}`);
  say(`== best: step ${result.bestMetric?.step} (val_bpb ${result.bestMetric?.value.toFixed(4)})`);
  const kept = (await listCheckpoints(dir)).filter((c) => c.committed).map((c) => c.step);
  say(`== retention deleted ${result.pruned.join(', ') || 'nothing'}; kept ${kept.join(', ')}`);

  say('== the checkpoint tools on the result');
  const ckpt = (...args: string[]) =>
    execFileSync(process.execPath, [join(__dirname, '..', 'bin', 'ckpt.js'), ...args], { encoding: 'utf8' });
  process.stdout.write(ckpt('verify', dir));
  say(`   last step: ${ckpt('last-step', dir).trim()}`);
  process.stdout.write(
    '   sample: ' + ckpt('sample', dir, '--prompt', 'The worker', '--tokens', '40', '--seed', '1'),
  );
  say(`== done in ${((Date.now() - started) / 1000).toFixed(0)} s; checkpoints in ${dir}`);

  await client.connection.close();
  if (keep && server) {
    say(`== server and Web UI stay up at ${server.uiAddress}; Ctrl-C to stop`);
    await new Promise<void>((r) => process.once('SIGINT', () => r()));
  }
  workers.forEach((w) => w.shutdown());
  await running;
  await connection.close();
  await server?.stop();
}

main().catch((err) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
