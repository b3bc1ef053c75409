/**
 * Evaluation: validation bits-per-byte on the fixed held-out split (the last 10% of the training data),
 * written atomically beside the checkpoint as eval_<step>.json with flat top-level metrics, which is what
 * retention's keep-best ranks by. The checkpoint is leased while it is read, so pruning cannot remove it
 * from under the evaluation.
 */
import { evalFile, InvalidArgumentError, log0, openStore, withLease, type Location } from '../checkpoint';
import { buildModel } from '../model/build';
import type { BackendChoice } from '../model/backend';
import { TextData } from './data';

export interface EvalOptions {
  dataFile?: string;
  backend?: BackendChoice;
  /** Held-out windows to score (all of them up to this many). */
  maxWindows?: number;
  holder?: string;
  /** Called after each batch of held-out windows: windows scored so far, out of `total`. */
  onProgress?: (done: number, total: number) => void;
}

export interface EvalResult {
  step: number;
  val_bpb: number;
  val_loss: number;
  tokens: number;
  evaluated_at: string;
  data: string;
}

export async function evaluateCheckpoint(
  dir: Location,
  step: number,
  options: EvalOptions = {},
): Promise<EvalResult> {
  const store = openStore(dir);
  return withLease(
    store,
    step,
    { holder: options.holder ?? `eval-${process.pid}`, ttlMs: 10 * 60_000 },
    async () => {
      const { model, meta } = await buildModel(store, step, { phase: 'eval', backend: options.backend });
      try {
        const run = meta.run as
          { seed: number; data: { name: string; sha256: string; path?: string } } | undefined;
        const data = TextData.fromFile(
          options.dataFile ?? run?.data.path,
          model.config.sequence_len,
          run?.seed ?? 0,
        );
        if (run && run.data.sha256 !== data.identity.sha256) {
          throw new InvalidArgumentError(
            `evaluation data ${data.identity.name} is not the data step ${step} was trained on (${run.data.name}); pass --data`,
            { field: 'data', step },
          );
        }
        const tf = (await import('@tensorflow/tfjs')) as typeof import('@tensorflow/tfjs');
        const windows = data.heldOutWindows(options.maxWindows ?? 64);
        let totalLoss = 0;
        let tokens = 0;
        const T = model.config.sequence_len;
        for (let i = 0; i < windows.length; i += 16) {
          const chunk = windows.slice(i, i + 16);
          const { inputs, targets } = data.heldOutBatch(chunk);
          const loss = tf.tidy(() => {
            const x = tf.tensor2d(inputs, [chunk.length, T], 'int32');
            const y = tf.tensor2d(targets, [chunk.length, T], 'int32');
            return model.loss(x, y).dataSync()[0]!;
          });
          totalLoss += loss * chunk.length * T;
          tokens += chunk.length * T;
          options.onProgress?.(i + chunk.length, windows.length);
        }
        const valLoss = totalLoss / tokens;
        // One token is one byte with the byte-level tokenizer, so bits per byte is the loss in bits per token.
        const result: EvalResult = {
          step,
          val_bpb: valLoss / Math.LN2,
          val_loss: valLoss,
          tokens,
          evaluated_at: new Date().toISOString(),
          data: data.identity.name,
        };
        await store.put(evalFile(step), Buffer.from(JSON.stringify(result, null, 2) + '\n'));
        log0(`step ${step}: val_bpb ${result.val_bpb.toFixed(4)} over ${tokens} held-out bytes`, { step });
        return result;
      } finally {
        model.dispose();
      }
    },
  );
}
