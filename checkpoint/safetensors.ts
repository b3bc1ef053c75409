/**
 * The safetensors module's public surface, as before the split: the format (safetensors-format.ts) and its
 * readers (safetensors-read.ts). The helpers the two share stay internal.
 */
export {
  MAX_HEADER_BYTES,
  decodeSafetensors,
  encodeSafetensors,
  parseSafetensorsHeader,
  safetensorsChunks,
  type SafetensorsHeader,
  type TensorInfo,
} from './safetensors-format';
export * from './safetensors-read';
