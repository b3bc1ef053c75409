/**
 * Text generation from a checkpoint: greedy at temperature 0, else sampling from the softmax with a seeded
 * generator, so the same seed gives the same text.
 */
import type { Location } from '../checkpoint';
import type { BackendChoice } from '../model/backend';
import { buildModel } from '../model/build';
import { Rng } from '../model/random';

export interface SampleOptions {
  prompt: string;
  tokens?: number;
  temperature?: number;
  seed?: number;
  backend?: BackendChoice;
}

export async function sampleText(dir: Location, step: number, options: SampleOptions): Promise<string> {
  const { model, tokenizer } = await buildModel(dir, step, { phase: 'eval', backend: options.backend });
  const tf = (await import('@tensorflow/tfjs')) as typeof import('@tensorflow/tfjs');
  try {
    const rng = new Rng(options.seed ?? 0, 'sample');
    const temperature = options.temperature ?? 0;
    const ids = tokenizer.encode(options.prompt);
    const generated: number[] = [];
    const T = model.config.sequence_len;
    const vocab = tokenizer.vocabSize;
    for (let i = 0; i < (options.tokens ?? 64); i++) {
      const context = [...ids, ...generated].slice(-T);
      if (context.length === 0) context.push(tokenizer.bos);
      const logits = tf.tidy(() => {
        const x = tf.tensor2d(Int32Array.from(context), [1, context.length], 'int32');
        return model
          .logits(x)
          .slice([0, context.length - 1, 0], [1, 1, vocab])
          .dataSync() as Float32Array;
      });
      generated.push(temperature <= 0 ? argmax(logits) : draw(logits, temperature, rng));
    }
    return options.prompt + tokenizer.decode(generated);
  } finally {
    model.dispose();
  }
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

function draw(logits: Float32Array, temperature: number, rng: Rng): number {
  const max = Math.max(...logits);
  const weights = Array.from(logits, (l) => Math.exp((l - max) / temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  let r = rng.uniform() * total;
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i]!;
    if (r <= 0) return i;
  }
  return weights.length - 1;
}
