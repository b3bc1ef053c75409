/**
 * `ckpt logits DIR [--step N] (--tokens 1,2,3 | --tokens-file FILE.json) [--json]`: the built-in GPT's
 * next-token logits at every position of a token sequence, the numbers to compare with another
 * implementation of the same model (nanochat's forward pass, say). --json prints exactly what the model
 * computed: one array per position, vocab_size float32 values each, each written as the double it widens to
 * (so it reads back to the same float32).
 */
import { readFileSync } from 'node:fs';
import { findLastStep } from '../checkpoint';
import { initBackend } from '../model/backend';
import { buildModel } from '../model/build';
import { loadConfig } from '../temporal.config';
import {
  type Command,
  expectPositionals,
  flag,
  out,
  positional,
  step as stepArg,
  str,
  UsageError,
} from './args';

/** Token ids from `--tokens 1,2,3` or (when that is not given) `--tokens-file` (a JSON array of integers). */
export function tokensArg(list: string | undefined, file: string | undefined): number[] {
  let values: unknown[];
  const field = list !== undefined ? 'tokens' : 'tokens-file';
  if (list !== undefined) {
    values = list.split(',').map((s) => (/^\s*\d+\s*$/.test(s) ? Number(s) : s));
  } else {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file!, 'utf8'));
    } catch (err) {
      throw new UsageError(`--tokens-file ${file}: ${(err as Error).message}`, { field, file });
    }
    if (!Array.isArray(parsed)) {
      throw new UsageError(`--tokens-file ${file} must hold a JSON array of token ids`, { field, file });
    }
    values = parsed;
  }
  values.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw new UsageError(
        `--${field}: token ${i} is ${JSON.stringify(v)}, not a token id (an integer >= 0)`,
        {
          field,
          ...(file ? { file } : {}),
        },
      );
    }
  });
  if (values.length === 0) throw new UsageError(`--${field}: no tokens`, { field });
  return values as number[];
}

function argmax(values: ArrayLike<number>, from: number, count: number): number {
  let best = 0;
  for (let i = 1; i < count; i++) if (values[from + i]! > values[from + best]!) best = i;
  return best;
}

export const logitsCommand: Command = {
  name: 'logits',
  summary:
    "The built-in GPT's logits at every position of a token sequence (to check parity with another implementation).",
  usage:
    'ckpt logits DIR [--step N] (--tokens 1,2,3 | --tokens-file FILE.json | --text TEXT) [--json]\n\n' +
    "--text: the ids the checkpoint's tokenizer gives for TEXT, after BOS (as nanochat's encode with\n" +
    'prepend=BOS).\n' +
    '--json prints one JSON array of arrays: positions × vocab_size float32 logits. Without it, one line per\n' +
    'position (after a header): the position, its token, the most likely next token and its logit. The step\n' +
    'defaults to the last committed one; the sequence must fit sequence_len and every id be below vocab_size.',
  options: {
    step: { type: 'string' },
    tokens: { type: 'string' },
    'tokens-file': { type: 'string' },
    text: { type: 'string' },
    json: { type: 'boolean' },
  },
  async run(args) {
    expectPositionals(args, 1, 'logits');
    const dir = positional(args, 0, 'DIR', 'logits');
    const given = (['tokens', 'tokens-file', 'text'] as const).filter((f) => str(args, f) !== undefined);
    if (given.length !== 1) {
      throw new UsageError(
        'logits: give the tokens with exactly one of --tokens 1,2,3, --tokens-file FILE.json or --text TEXT',
        { field: 'tokens' },
      );
    }
    const field = given[0]!;
    const ids = field === 'text' ? undefined : tokensArg(str(args, 'tokens'), str(args, 'tokens-file'));
    const step = stepArg(args) ?? (await findLastStep(dir));
    const backend = loadConfig().backend;
    const { model, tokenizer } = await buildModel(dir, step, { phase: 'eval', backend });
    try {
      const { vocab_size: V, sequence_len } = model.config;
      const tokens = ids ?? tokenizer.encode(str(args, 'text')!, { bos: true });
      const outside = tokens.findIndex((t) => t >= V);
      if (outside >= 0) {
        throw new UsageError(
          `--${field}: token ${outside} is ${tokens[outside]}, outside the vocabulary (vocab_size ${V})`,
          { field, step },
        );
      }
      if (tokens.length > sequence_len) {
        throw new UsageError(
          `--${field}: ${tokens.length} tokens, more than sequence_len (${sequence_len})`,
          {
            field,
            step,
          },
        );
      }
      // buildModel started the backend; this returns the same one.
      const { tf } = await initBackend({ force: backend });
      const logits = tf.tidy(
        () =>
          model
            .logits(tf.tensor2d(Int32Array.from(tokens), [1, tokens.length], 'int32'))
            .dataSync() as Float32Array,
      );
      if (flag(args, 'json')) {
        const rows = tokens.map((_, t) => Array.from(logits.subarray(t * V, (t + 1) * V)));
        out(JSON.stringify(rows));
      } else {
        out(
          ['position\ttoken\targmax\tlogit']
            .concat(
              tokens.map((token, t) => {
                const next = argmax(logits, t * V, V);
                return `${t}\t${token}\t${next}\t${logits[t * V + next]}`;
              }),
            )
            .join('\n'),
        );
      }
      return 0;
    } finally {
      model.dispose();
    }
  },
};
