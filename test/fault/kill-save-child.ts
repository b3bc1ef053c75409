/**
 * Child of the kill-save campaign: saves one checkpoint through a store wrapper that announces a chosen put
 * ("AT <label>" on stdout), before it starts or halfway through its bytes, and then either carries on (the
 * parent SIGKILLs it after a random delay, wherever it is by then) or stops dead ("hang").
 * Usage: kill-save-child.ts local:DIR|s3:PREFIX STEP PUT_INDEX before|mid go|hang MODEL_SIZE SEED
 * S3: FAULT_S3_ENDPOINT, FAULT_S3_BUCKET, FAULT_S3_KEY, FAULT_S3_SECRET in the environment.
 */
import {
  LocalStore,
  S3Connection,
  S3Store,
  saveCheckpoint,
  MIN_PART_SIZE,
  type ByteSource,
  type PutOptions,
  type Store,
} from '../../checkpoint';
import { tinyMeta, tinyModel, tinyOptimizer } from '../helpers/fixtures';

const [where, stepArg, indexArg, phase, mode, sizeArg, seedArg] = process.argv.slice(2);
const stopAt = Number(indexArg);
const seed = Number(seedArg);
const hang = () => new Promise<never>(() => setInterval(() => undefined, 1000));

async function at(label: string): Promise<void> {
  process.stdout.write(`AT ${label}\n`);
  if (mode === 'hang') await hang();
}

/** Delegates everything to `inner`; counts puts across sub-stores. */
class AnnouncingStore implements Store {
  constructor(
    private readonly inner: Store,
    private readonly counter = { puts: 0 },
  ) {}
  get location() {
    return this.inner.location;
  }
  async put(key: string, source: ByteSource, options?: PutOptions) {
    const index = this.counter.puts++;
    if (index === stopAt && phase === 'before') await at(`before ${key}`);
    if (index === stopAt && phase === 'mid') {
      const chunks = source instanceof Uint8Array ? [source] : source;
      async function* half(): AsyncIterable<Uint8Array> {
        let first = true;
        for await (const chunk of chunks as AsyncIterable<Uint8Array>) {
          if (!first) {
            yield chunk;
            continue;
          }
          first = false;
          const cut = Math.ceil(chunk.byteLength / 2);
          yield chunk.subarray(0, cut);
          await new Promise((r) => setTimeout(r, 5)); // let the first half reach the temp file / request
          await at(`mid ${key}`);
          yield chunk.subarray(cut);
        }
      }
      return this.inner.put(key, half(), options);
    }
    return this.inner.put(key, source, options);
  }
  read(key: string) {
    return this.inner.read(key);
  }
  readRange(key: string, offset: number, length: number) {
    return this.inner.readRange(key, offset, length);
  }
  stream(key: string, offset?: number) {
    return this.inner.stream(key, offset);
  }
  stat(key: string) {
    return this.inner.stat(key);
  }
  exists(key: string) {
    return this.inner.exists(key);
  }
  list(prefix?: string) {
    return this.inner.list(prefix);
  }
  listDirs(prefix?: string) {
    return this.inner.listDirs(prefix);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
  sub(prefix: string): Store {
    return new AnnouncingStore(this.inner.sub(prefix), this.counter);
  }
}

function open(spec: string): Store {
  if (spec.startsWith('local:')) return new LocalStore(spec.slice('local:'.length));
  const e = process.env;
  return new S3Store(
    `s3://${e.FAULT_S3_BUCKET}/${spec.slice('s3:'.length)}`,
    new S3Connection({
      endpoint: e.FAULT_S3_ENDPOINT,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: e.FAULT_S3_KEY!, secretAccessKey: e.FAULT_S3_SECRET! },
      partSize: MIN_PART_SIZE,
    }),
  );
}

saveCheckpoint(new AnnouncingStore(open(where!)), Number(stepArg), {
  model: tinyModel(seed, Number(sizeArg)),
  optimizer: tinyOptimizer(seed),
  meta: tinyMeta({ seed }),
}).then(
  () => {
    process.stdout.write('DONE\n');
    process.exit(0);
  },
  (err) => {
    process.stderr.write(String(err) + '\n');
    process.exit(3);
  },
);
