import type { BackendChoice } from '../../model/backend';
import { loadConfig } from '../../temporal.config';

/**
 * The backend that in-process model tests force: CKPT_BACKEND when set (CI runs the model, training, resume
 * and pipeline tests again with CKPT_BACKEND=tensorflow), otherwise wasm. Tests that run `ckpt` read the
 * same variable through the CLI's config.
 */
export const TEST_BACKEND: BackendChoice = loadConfig().backend ?? 'wasm';
