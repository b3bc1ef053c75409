/**
 * Child process for crash tests: saves one checkpoint through a store that stops dead at a chosen put
 * (before it starts, or in the middle of writing its bytes) and tells the parent, which then SIGKILLs it.
 * Usage: save-child.ts DIR STEP PUT_INDEX before|mid|none [SEED]
 */
import { LocalStore, saveCheckpoint, type ByteSource, type PutOptions, type Store } from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from './fixtures';

const [dir, stepArg, indexArg, phase, seedArg] = process.argv.slice(2);
const stopAt = Number(indexArg);
const seed = Number(seedArg ?? 1);
const hang = () => new Promise<never>(() => setInterval(() => undefined, 1000));

function stopped(label: string): Promise<never> {
  process.stdout.write(`STOPPED ${label}\n`);
  return hang();
}

class StoppingStore extends LocalStore {
  private puts = 0;
  override async put(key: string, source: ByteSource, options?: PutOptions) {
    const index = this.puts++;
    if (index === stopAt && phase === 'before') await stopped(`before ${key}`);
    if (index === stopAt && phase === 'mid') {
      const chunks = source instanceof Uint8Array ? [source] : source;
      async function* halfThenStop(): AsyncIterable<Uint8Array> {
        for await (const chunk of chunks as AsyncIterable<Uint8Array>) {
          yield chunk.subarray(0, Math.ceil(chunk.byteLength / 2));
          await new Promise((r) => setTimeout(r, 30)); // let the bytes reach the temp file
          await stopped(`mid ${key}`);
        }
      }
      return super.put(key, halfThenStop(), options);
    }
    return super.put(key, source, options);
  }
  override sub(prefix: string): Store {
    return new StoppingStore(`${this.location}/${prefix}`);
  }
}

saveCheckpoint(new StoppingStore(dir!), Number(stepArg), {
  model: tinyModel(seed, 4096),
  optimizer: tinyOptimizer(seed),
  meta: tinyMeta({ seed }),
}).then(
  () => process.stdout.write('DONE\n'),
  (err) => {
    process.stderr.write(String(err) + '\n');
    process.exit(3);
  },
);
