/** `ckpt copy`: copy committed, verified checkpoints between two locations (directories or s3:// URLs). */
import { copyCheckpoints } from '../checkpoint';
import { ProgressLine } from './progress';
import {
  type Command,
  expectPositionals,
  flag,
  humanBytes,
  note,
  out,
  positional,
  step as stepArg,
} from './args';

export const copyCommand: Command = {
  name: 'copy',
  summary:
    'Copy committed checkpoints between locations (local or s3://), checking every byte against the source\n' +
    'manifest and committing each step at the destination (data files first, manifest last).',
  usage:
    'ckpt copy SRC_DIR DST_DIR [--step N] [--json]     steps already committed at DST_DIR are skipped;\n' +
    '           exit 1 if a source step does not verify (it is not copied)',
  options: { step: { type: 'string' }, json: { type: 'boolean' } },
  async run(args) {
    expectPositionals(args, 2, 'copy');
    const src = positional(args, 0, 'SRC_DIR', 'copy');
    const dst = positional(args, 1, 'DST_DIR', 'copy');
    const step = stepArg(args);
    const bar = new ProgressLine();
    const result = await copyCheckpoints(src, dst, {
      ...(step === undefined ? {} : { step }),
      onProgress: (p) =>
        bar.update(
          `copy step ${p.step}: ${p.file}  ${humanBytes(p.bytes)} / ${humanBytes(p.totalBytes)} (${Math.floor((100 * p.bytes) / Math.max(1, p.totalBytes))} %)`,
        ),
    });
    bar.done();
    if (flag(args, 'json')) {
      out(JSON.stringify({ src, dst, ...result }, null, 2));
      return result.failed.length === 0 ? 0 : 1;
    }
    for (const c of result.copied) out(`copied  step ${c.step}  (${c.files} files, ${humanBytes(c.bytes)})`);
    for (const f of result.failed) out(`FAILED  step ${f.step}: ${f.error}`);
    for (const s of result.skipped) note(`skipped step ${s.step}: ${s.why}`);
    if (result.copied.length + result.failed.length + result.skipped.length === 0) {
      note(`no committed checkpoints in ${src}; nothing copied`);
    }
    return result.failed.length === 0 ? 0 : 1;
  },
};
