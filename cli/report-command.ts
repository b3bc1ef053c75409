/** `ckpt report`: one self-contained HTML page about a checkpoint directory (or every tag under a root). */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { WorkflowNotFoundError } from '@temporalio/client';
import { describeError, StoreError, validatePolicy } from '../checkpoint';
import { loadConfig } from '../temporal.config';
import { type Command, expectPositionals, note, out, positional, str } from './args';
import { pipelineStatus, RETENTION_OPTIONS, retentionFromArgs } from './pipeline-commands';
import { bpbSpec, lossSpec, renderSvg } from './report-charts';
import { collectReport, type ReportData } from './report-data';
import { type PipelineSection, type ReportCharts, renderReportHtml } from './report-html';
import { connectClient, uiLink } from './temporal-client';

/** Renders the plots of `data` to SVG; a plot with nothing to show is left out. */
export async function renderCharts(data: ReportData): Promise<ReportCharts> {
  const loss = data.targets.flatMap((t) => t.loss.map((p) => ({ series: t.label, ...p })));
  const bpb = data.targets.flatMap((t) =>
    t.bpb.map((p) => ({
      series: t.label,
      step: p.step,
      val_bpb: p.val_bpb,
      checkpoint: p.pruned ? 'pruned' : 'current',
    })),
  );
  return {
    loss: loss.length > 0 ? await renderSvg(lossSpec(loss)) : undefined,
    bpb: bpb.length > 0 ? await renderSvg(bpbSpec(bpb)) : undefined,
  };
}

async function readPipeline(id: string): Promise<PipelineSection> {
  const settings = loadConfig().temporal;
  const section: PipelineSection = { id, uiLink: uiLink(settings, id) };
  let client: Awaited<ReturnType<typeof connectClient>> | undefined;
  // pipelineStatus gives up on an unanswered query after a while but leaves the call running (and retried);
  // aborting cancels it, so closing the connection afterwards leaves no retry to fail on a closed channel.
  const abort = new AbortController();
  try {
    client = await connectClient(settings);
    const c = client;
    section.status = await c.connection.withAbortSignal(abort.signal, () => pipelineStatus(c, id));
  } catch (err) {
    section.error = err instanceof WorkflowNotFoundError ? `no pipeline with id ${id}` : describeError(err);
  } finally {
    abort.abort();
    await client?.connection.close().catch(() => undefined);
  }
  return section;
}

/** Writes under a temp name in the same directory, then renames: a reader never sees half a page. */
async function writeAtomically(file: string, text: string): Promise<void> {
  const temp = join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await fs.writeFile(temp, text, 'utf8');
    await fs.rename(temp, file);
  } catch (err) {
    await fs.unlink(temp).catch(() => undefined);
    // A typed error: the CLI prints one line and exits 2, not an unexpected-error hint.
    const code = (err as NodeJS.ErrnoException).code;
    const hint =
      code === 'ENOENT'
        ? ' (its directory does not exist)'
        : code === 'ENOSPC'
          ? ' (disk full)'
          : code === 'EACCES'
            ? ' (permission denied)'
            : '';
    throw new StoreError(`report: cannot write ${file}${hint}: ${describeError(err)}`, {
      file,
      code,
      cause: err,
    });
  }
}

export const reportCommand: Command = {
  name: 'report',
  summary:
    'Write one self-contained HTML page: loss per step, val_bpb per checkpoint, every checkpoint and its state\n' +
    '(committed, verified, evaluated, best, leased, pinned, pruned and by which policy), sizes, pipeline status.',
  usage:
    'ckpt report DIR|ROOT [--out FILE.html] [--workflow ID]\n' +
    '            [--keep-last N] [--keep-best K --metric M --mode min|max] [--keep-every S] [--pin STEP]...\n' +
    '  DIR = ROOT/<source_dir>/<tag>; a ROOT reports every tag of every configured source.\n' +
    '  Retention flags add which rules would keep each checkpoint now. Prints the path of the page.',
  options: { out: { type: 'string' }, workflow: { type: 'string' }, ...RETENTION_OPTIONS },
  async run(args) {
    expectPositionals(args, 1, 'report');
    const location = positional(args, 0, 'DIR|ROOT', 'report');
    const given = retentionFromArgs(args);
    const policy = given ? validatePolicy(given) : undefined;
    const file = resolve(str(args, 'out') ?? 'report.html');
    const workflow = str(args, 'workflow');
    const data = await collectReport(location, loadConfig(), policy);
    const pipeline = workflow !== undefined ? await readPipeline(workflow) : undefined;
    const html = renderReportHtml(data, await renderCharts(data), pipeline);
    await writeAtomically(file, html);
    for (const t of data.targets) for (const w of t.warnings) note(`${t.label}: ${w}`);
    if (pipeline?.error) note(`report: pipeline ${workflow} status unavailable: ${pipeline.error}`);
    out(file);
    return pipeline?.error ? 1 : 0;
  },
};
