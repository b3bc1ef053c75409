/**
 * `ckpt report --workflow ID` against a real Temporal dev server: a pipeline run to completion by a real
 * worker (with evaluation and retention), its status in the page; an unknown id is reported as unavailable (exit 1, page still written).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type DevServer, startDevServer } from '../../infra/temporal';
import { ckpt, ckptAsync, ROOT } from '../helpers/cli';
import { tempDir } from '../helpers/tmp';

const SMALL = ['--depth', '1', '--n-embd', '32', '--seq-len', '32', '--batch', '4'];

function pipelineSection(html: string): string {
  const m = /<section id="pipeline">([\s\S]*?)<\/section>/.exec(html);
  assert.ok(m, 'the page has no pipeline section');
  return m[1]!.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ');
}

describe('ckpt report --workflow', () => {
  const work = tempDir('ckpt-report-wf-');
  const root = join(work, 'R');
  const dir = join(root, 'base_checkpoints', 'd1');
  let server: DevServer | undefined;
  let worker: ChildProcess | undefined;
  let env: NodeJS.ProcessEnv = {};

  before(async () => {
    server = await startDevServer();
    const suffix = `${process.pid}-${Date.now()}`;
    env = {
      TEMPORAL_ADDRESS: server.address,
      TEMPORAL_NAMESPACE: 'default',
      CKPT_TASK_QUEUE_TRAIN: `report-train-${suffix}`,
      CKPT_TASK_QUEUE_CONTROL: `report-control-${suffix}`,
      CKPT_UI_ADDRESS: server.uiAddress,
      CKPT_ALLOWED_ROOTS: root,
    };
    worker = spawn(process.execPath, [join(ROOT, 'bin', 'ckpt.js'), 'worker', '--role', 'all'], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: 'ignore',
    });
    const start = ['pipeline', 'start', '--root', root, ...SMALL, '--steps', '8', '--segment-steps', '4'];
    const res = await ckptAsync(
      [...start, '--save-every', '4', '--eval', '--keep-last', '1', '--id', 'report-pipeline', '--wait'],
      env,
    );
    assert.equal(res.code, 0, res.stderr);
  });

  after(async () => {
    if (worker && worker.exitCode === null) {
      const exited = new Promise((r) => worker!.once('exit', r));
      worker.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (worker.exitCode === null) worker.kill('SIGKILL');
    }
    await server?.stop();
  });

  it("shows the pipeline's status beside its checkpoints", () => {
    const out = join(work, 'done.html');
    const res = ckpt(['report', dir, '--out', out, '--workflow', 'report-pipeline'], env);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.trim(), out);
    const html = readFileSync(out, 'utf8');
    const section = pipelineSection(html);
    assert.match(section, /Pipeline report-pipeline/);
    assert.match(section, /state completed \(workflow COMPLETED\)/);
    assert.match(section, /step 8 \/ 8/);
    assert.match(section, /last checkpoint 8/);
    assert.match(section, /best metric \d+\.\d{4} at step [48]/);
    assert.match(section, /retention keep-last 1/);
    assert.ok(section.includes(`${env.CKPT_UI_ADDRESS}/namespaces/default/workflows/report-pipeline`));
    // The pipeline's retention pruned step 4 through pruneCheckpoints: the retention log names it.
    assert.match(
      html,
      /<tr class="checkpoint pruned" data-step="4">[\s\S]*?by <strong>keep-last 1<\/strong>/,
    );
    assert.match(html, /<tr class="checkpoint current" data-step="8">/);
  });

  it('writes the page but exits 1 when the workflow is unknown', () => {
    const out = join(work, 'unknown.html');
    const res = ckpt(['report', dir, '--out', out, '--workflow', 'no-such-<pipeline>'], env);
    assert.equal(res.code, 1, res.stderr);
    assert.equal(res.stdout.trim(), out);
    assert.match(res.stderr, /no pipeline with id no-such-<pipeline>/);
    assert.match(
      pipelineSection(readFileSync(out, 'utf8')),
      /status unavailable: no pipeline with id no-such-&lt;pipeline&gt;/,
    );
  });
});
