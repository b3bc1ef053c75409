/**
 * Import weights written elsewhere (e.g. a PyTorch state_dict saved with `safetensors.torch.save_file`) as a
 * committed checkpoint: the tensors become model_<step>.safetensors, a meta file records the model config
 * and where the weights came from, and the manifest commits them — the same commit protocol as a save, so an
 * import that dies half-way leaves nothing that looks like a checkpoint.
 *
 * Only safetensors is read: it is a header of JSON plus raw bytes, so reading it runs no code. A PyTorch
 * pickle (`torch.save`, .pt/.bin/.pth) can run arbitrary code when unpickled and is refused with a message
 * saying how to convert it. This layer knows no model: a caller that does (the CLI) passes `check` to refuse
 * tensors that would not build.
 */
import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { saveCheckpoint, type SaveDtype } from './checkpoint';
import { InvalidArgumentError, SafetensorsError } from './errors';
import type { FileRecord, Meta } from './manifest';
import { FORMAT_VERSION } from './manifest';
import { applyMigrations } from './migrations';
import { validateStep } from './names';
import { type Location, openStore } from './location';
import { readSafetensorsStream } from './safetensors-read';
import type { NamedTensors } from './tensors';

export interface ImportOptions {
  /** Step number the weights are committed under. */
  step: number;
  /**
   * The model config (nanochat's keys: sequence_len, vocab_size, n_layer, n_head, n_kv_head, n_embd,
   * window_pattern), stored as meta.model_config. Without it the checkpoint holds plain tensors that load
   * with loadCheckpoint but do not build a model.
   */
  modelConfig?: Record<string, unknown>;
  /** Further meta fields (e.g. a tokenizer description, notes). They cannot replace the fields set here. */
  meta?: Record<string, unknown>;
  /** Convert floating tensors to this dtype; default: keep each tensor's dtype as it is in the file. */
  saveDtype?: SaveDtype;
  /**
   * Called before anything is written, with the tensors and meta as a load will see them (migrations
   * applied, e.g. `_orig_mod.` prefixes stripped): throw to refuse the import.
   */
  check?: (tensors: NamedTensors, meta: Meta) => void | Promise<void>;
}

export interface ImportResult {
  step: number;
  location: string;
  /** Tensors in the imported file. */
  tensors: number;
  /** Size and sha256 of the source file, also recorded in meta.imported_from. */
  source: { file: string; bytes: number; sha256: string };
  /** Files written, with sizes and checksums (the manifest lists the same). */
  files: Record<string, FileRecord>;
}

const SAFETENSORS_HEADER_START = 0x7b; // '{': the JSON header follows the 8-byte length

/** Refuse files that are not safetensors before parsing them, naming the likely format. */
async function sniff(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    const head = Buffer.alloc(9);
    const { bytesRead } = await handle.read(head, 0, 9, 0);
    if (bytesRead === 9 && head[8] === SAFETENSORS_HEADER_START) return;
    const how =
      'convert it in Python first: safetensors.torch.save_file(state_dict, "model.safetensors") (see docs/import.md)';
    if (head[0] === 0x50 && head[1] === 0x4b) {
      throw new SafetensorsError(
        'invalid-header',
        `${file} is a zip archive, the format of torch.save; pickled files are never read (unpickling runs code): ${how}`,
        { file },
      );
    }
    if (head[0] === 0x80 && bytesRead >= 2 && head[1]! >= 2 && head[1]! <= 5) {
      throw new SafetensorsError(
        'invalid-header',
        `${file} looks like a Python pickle; pickled files are never read (unpickling runs code): ${how}`,
        { file },
      );
    }
    throw new SafetensorsError(
      'invalid-header',
      `${file} is not a safetensors file (no JSON header after the 8-byte length)`,
      {
        file,
      },
    );
  } finally {
    await handle.close();
  }
}

/**
 * Commit the tensors of a safetensors file as checkpoint `step` in `dir` (a directory or an s3:// URL).
 * Refuses a step that is already committed (AlreadyCommittedError), a file that is not safetensors, and
 * whatever `check` refuses; nothing is written in those cases.
 */
export async function importSafetensors(
  file: string,
  dir: Location,
  options: ImportOptions,
): Promise<ImportResult> {
  const step = validateStep(options.step);
  const path = resolve(file);
  let size: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new Error('not a regular file');
    size = info.size;
  } catch (err) {
    throw new InvalidArgumentError(`cannot read ${file}: ${(err as Error).message}`, { file, field: 'file' });
  }
  await sniff(path);
  const read = await readSafetensorsStream(createReadStream(path), size, { file });
  const count = Object.keys(read.tensors).length;
  if (count === 0) throw new InvalidArgumentError(`${file} holds no tensors: nothing to import`, { file });
  if (
    options.modelConfig !== undefined &&
    (options.modelConfig === null ||
      typeof options.modelConfig !== 'object' ||
      Array.isArray(options.modelConfig))
  ) {
    throw new InvalidArgumentError('the model config must be a JSON object', { field: 'model_config' });
  }

  const source = { file: basename(path), bytes: size, sha256: read.sha256 };
  const meta: Record<string, unknown> = {
    ...(options.meta ?? {}),
    ...(options.modelConfig ? { model_config: options.modelConfig } : {}),
    imported_from: {
      ...source,
      format: 'safetensors',
      ...(Object.keys(read.metadata).length > 0 ? { metadata: read.metadata } : {}),
    },
  };
  if (options.check) {
    // What a load will see: migrations run on a copy (names only change in the copy's table).
    const tensors = { ...read.tensors };
    const migrated = applyMigrations(
      { ...meta, step, world_size: 1, format_version: FORMAT_VERSION } as Meta,
      tensors,
    );
    await options.check(tensors, migrated.meta);
  }
  const store = openStore(dir);
  const saved = await saveCheckpoint(
    store,
    step,
    { model: read.tensors, meta },
    { saveDtype: options.saveDtype },
  );
  return { step, location: store.location, tensors: count, source, files: saved.files };
}
