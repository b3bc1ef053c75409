/**
 * One training slot per GPU. A training worker on a GPU host runs as many segments at once as it has GPUs,
 * and each child (a segment, one rank of a segment, an evaluation) sees only its slot's GPU through
 * CUDA_VISIBLE_DEVICES: libtensorflow (and torch) otherwise claim memory on every visible GPU. The GPUs
 * come from CKPT_GPUS (a list of device ids, `auto`: ask nvidia-smi, `none`), restricted to what the
 * worker's own CUDA_VISIBLE_DEVICES allows.
 */
import { spawnSync } from 'node:child_process';
import { InvalidArgumentError } from '../checkpoint/errors';
import { log0 } from '../checkpoint/log';

export const GPUS_ENV = 'CKPT_GPUS';

/** The GPUs a worker gives its children, in order: device ids as CUDA_VISIBLE_DEVICES names them. */
export function gpusFromEnv(
  env: NodeJS.ProcessEnv = process.env,
  detect: () => string[] = detectGpus,
): string[] {
  const setting = (env[GPUS_ENV] ?? 'auto').trim();
  const visible = env.CUDA_VISIBLE_DEVICES?.trim();
  const allowed = visible === undefined ? undefined : visible === '' ? [] : splitList(visible);
  if (setting === 'none' || setting === '') return [];
  if (setting === 'auto') {
    // The operator's own restriction wins over what the driver lists.
    return allowed ?? detect();
  }
  const listed = splitList(setting);
  for (const id of listed) {
    if (!/^(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)$/.test(id)) {
      throw new InvalidArgumentError(
        `${GPUS_ENV}: "${id}" is not a GPU index or UUID (a list like 0,1, or auto, or none)`,
        { field: GPUS_ENV },
      );
    }
  }
  if (allowed) {
    const outside = listed.filter((id) => !allowed.includes(id));
    if (outside.length > 0) {
      throw new InvalidArgumentError(
        `${GPUS_ENV} names GPU(s) ${outside.join(', ')} that this worker's CUDA_VISIBLE_DEVICES (${visible}) hides`,
        { field: GPUS_ENV },
      );
    }
  }
  return listed;
}

function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** GPU indices nvidia-smi lists; none when there is no driver (or no nvidia-smi). */
export function detectGpus(): string[] {
  const res = spawnSync('nvidia-smi', ['--query-gpu=index', '--format=csv,noheader'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  if (res.status !== 0 || typeof res.stdout !== 'string') return [];
  return splitList(res.stdout.replace(/\s*\n\s*/g, ','));
}

/** A slot held by one running child; release() gives it back. */
export interface GpuSlot {
  slot: number;
  device: string;
  env: { CUDA_VISIBLE_DEVICES: string };
  release(): void;
}

/**
 * The slots of one worker: slot i runs on GPU i (round robin when there are more slots than GPUs). A
 * child takes the lowest free slot; with no GPUs, no slot is taken and children see the worker's devices.
 */
export class GpuSlots {
  private readonly busy = new Set<number>();

  constructor(
    readonly gpus: readonly string[],
    readonly slots: number,
  ) {}

  acquire(): GpuSlot | undefined {
    if (this.gpus.length === 0) return undefined;
    let slot = 0;
    while (this.busy.has(slot)) slot++;
    this.busy.add(slot);
    const device = this.gpus[slot % this.gpus.length]!;
    let released = false;
    return {
      slot,
      device,
      env: { CUDA_VISIBLE_DEVICES: device },
      release: () => {
        if (released) return;
        released = true;
        this.busy.delete(slot);
      },
    };
  }

  /** Slots in use now (for tests and diagnostics). */
  inUse(): number[] {
    return [...this.busy].sort((a, b) => a - b);
  }
}

let current: GpuSlots | undefined;

/** Set this worker's GPUs and slots (at start-up); undefined: no GPU slots. */
export function configureGpuSlots(slots: GpuSlots | undefined): void {
  current = slots;
}

/** Run `fn` with a GPU slot's environment (none when the worker has no GPUs), giving the slot back after. */
export async function withGpuSlot<T>(
  fn: (env: NodeJS.ProcessEnv | undefined, slot: GpuSlot | undefined) => Promise<T>,
): Promise<T> {
  const slot = current?.acquire();
  try {
    return await fn(slot?.env, slot);
  } finally {
    slot?.release();
  }
}

/** Whether this worker's children run on GPU slots. */
export function gpuSlotsConfigured(): boolean {
  return current !== undefined;
}

/**
 * A training worker's slots: `given` (CKPT_TRAIN_SLOTS, `--slots`), else one per GPU, else 1. Sets up the
 * GPU slots when the worker has GPUs (CKPT_GPUS), and says so on stderr.
 */
export function trainingSlots(given: number | undefined, gpus: string[] = gpusFromEnv()): number {
  const slots = given ?? Math.max(1, gpus.length);
  configureGpuSlots(gpus.length > 0 ? new GpuSlots(gpus, slots) : undefined);
  if (gpus.length > 0) {
    log0(
      `training slots: ${slots} on GPU(s) ${gpus.join(', ')} (CUDA_VISIBLE_DEVICES per slot` +
        `${slots > gpus.length ? '; more slots than GPUs: slots share them round robin' : ''})`,
    );
  }
  return slots;
}
