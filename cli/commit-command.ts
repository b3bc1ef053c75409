/**
 * `ckpt commit`: the checkpoint protocol for programs in any language. A command program writes a step's
 * files (into a staging directory, or the checkpoint directory) and runs this to publish them: checked,
 * hashed, manifest last, fenced by the segment's writer token, or under a lease it takes itself.
 */
import { absoluteLocation, commitFiles } from '../checkpoint';
import {
  acquireWriter,
  defaultHolder,
  fenceFromWriterToken,
  WRITER_TOKEN_ENV,
  type WriterLease,
} from '../checkpoint/writer';
import { loadConfig } from '../temporal.config';
import { refuseIfClaimed } from './claims';
import {
  type Command,
  expectPositionals,
  flag,
  humanBytes,
  int,
  note,
  out,
  positional,
  step,
  str,
  UsageError,
} from './args';

/** The environment variable that names the program a segment runs (recorded in meta by the commit). */
export const PROGRAM_ENV = 'CKPT_PROGRAM';

export const commitCommand: Command = {
  name: 'commit',
  summary:
    "Publish the files a program wrote for a step as a checkpoint: checked, hashed, manifest last (a command program's\n" +
    'checkpoint protocol; see docs/programs.md).',
  usage:
    'ckpt commit DIR --step N [--rank R --world-size W] [--from STAGING_DIR] [--program NAME] [--json]\n\n' +
    'Files of step N: model_<step>.safetensors and meta_<step>.json (rank 0), optim_<step>_rank<r>.safetensors\n' +
    '(every rank, or none), extra_<step>_<name> (rank 0, optional). --from reads them from a local staging\n' +
    'directory and publishes them into DIR (a path or s3://); without it they are already in DIR. With --rank,\n' +
    'each rank commits its own files and rank 0 writes the manifest once all are there. Under a segment the\n' +
    `writer token comes from ${WRITER_TOKEN_ENV}; run by hand, the command takes the directory's writer lease.\n` +
    'Exit 2, nothing published: a step already committed, a missing or malformed file, a name outside the contract.',
  options: {
    step: { type: 'string' },
    rank: { type: 'string' },
    'world-size': { type: 'string' },
    from: { type: 'string' },
    program: { type: 'string' },
    json: { type: 'boolean' },
  },
  async run(args) {
    expectPositionals(args, 1, 'commit');
    const dir = absoluteLocation(positional(args, 0, 'DIR', 'commit'));
    const at = step(args);
    if (at === undefined) throw new UsageError('commit: --step N is required', { field: 'step' });
    const rank = int(args, 'rank', 0);
    const worldSize = int(args, 'world-size', 1);
    if (rank !== undefined && worldSize === undefined)
      throw new UsageError('commit: --rank needs --world-size W', { field: 'world-size' });
    const program = str(args, 'program') ?? process.env[PROGRAM_ENV];
    if (!program)
      throw new UsageError(`commit: give --program NAME (or set ${PROGRAM_ENV})`, { field: 'program' });
    const from = str(args, 'from');
    const token = process.env[WRITER_TOKEN_ENV];
    const lead = (rank ?? 0) === 0;
    // Run by hand (no token): rank 0 takes the directory's lease for the commit; other ranks never need one.
    let lease: WriterLease | undefined;
    if (lead && !token) {
      await refuseIfClaimed(dir, { claim: null, takeOver: false, settings: loadConfig().temporal });
      lease = await acquireWriter(dir, { holder: `${defaultHolder()} (ckpt commit)` });
      lease.startRenewing();
    }
    try {
      const result = await commitFiles(dir, at, {
        ...(rank !== undefined ? { rank } : {}),
        ...(worldSize !== undefined ? { worldSize } : {}),
        ...(from !== undefined ? { from } : {}),
        program,
        ...(lease
          ? { fence: lease.token }
          : token && lead
            ? { fence: () => fenceFromWriterToken(dir, token) }
            : {}),
      });
      if (flag(args, 'json')) {
        out(
          JSON.stringify(
            { dir, step: at, committed: result.committed, bytes: result.bytes, files: result.files },
            null,
            2,
          ),
        );
      } else {
        note(
          result.committed
            ? `committed step ${at} in ${dir} (${Object.keys(result.files).length} file(s) of this rank, ${humanBytes(result.bytes)})`
            : `published rank ${rank}'s files of step ${at} in ${dir}; rank 0 commits`,
        );
      }
      return 0;
    } finally {
      await lease?.release();
    }
  },
};
