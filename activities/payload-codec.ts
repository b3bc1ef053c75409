/**
 * Payload encryption for everything the pipelines put in Temporal's history: workflow inputs and results,
 * activity inputs and results, memos, signals, queries, updates and heartbeat details (checkpoint paths,
 * configs, metrics), and failures' messages and stack traces (encoded-failures.ts). AES-256-GCM with a
 * fresh 96-bit nonce per payload; the key's id is written in the payload's metadata, so keys rotate by id:
 * the first key encrypts, every key listed decrypts, and an old key is dropped once no history that needs
 * it is kept. Search attributes are not payloads of this
 * kind and stay in clear (Temporal indexes them): docs/security.md says what they reveal.
 *
 * The codec runs in the client and the workers (the plugin, `ckpt worker` and the CLI install it); the
 * Web UI decodes through `ckpt codec-server`.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Payload, PayloadCodec } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { CheckpointError } from '../checkpoint/errors';
import type { CodecKeys } from '../temporal.config';

/** The metadata of an encrypted payload: its encoding, and the id of the key that encrypted it. */
export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const KEY_ID_METADATA = 'encryption-key-id';

const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** A payload that cannot be decrypted here: its key id is not configured, or its bytes were altered. */
export class PayloadDecryptionError extends CheckpointError {}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class EncryptionCodec implements PayloadCodec {
  constructor(private readonly keys: CodecKeys) {}

  async encode(payloads: Payload[]): Promise<Payload[]> {
    const key = this.keys.keys[this.keys.active]!;
    return payloads.map((payload) => {
      const plain = temporal.api.common.v1.Payload.encode(payload).finish();
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, nonce);
      const sealed = Buffer.concat([nonce, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      return {
        metadata: {
          encoding: encoder.encode(ENCRYPTED_ENCODING),
          [KEY_ID_METADATA]: encoder.encode(this.keys.active),
        },
        data: sealed,
      };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      const encoding = payload.metadata?.encoding;
      if (!encoding || decoder.decode(encoding) !== ENCRYPTED_ENCODING) return payload;
      const idBytes = payload.metadata?.[KEY_ID_METADATA];
      const id = idBytes ? decoder.decode(idBytes) : '(none)';
      const key = this.keys.keys[id];
      if (!key) {
        throw new PayloadDecryptionError(
          `payload encrypted with key "${id}", which is not among the configured keys (${Object.keys(this.keys.keys).join(', ')}); ` +
            'keep old keys in CKPT_CODEC_KEYS until no history needs them',
          { field: KEY_ID_METADATA },
        );
      }
      const sealed = Buffer.from(payload.data ?? new Uint8Array());
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, sealed.subarray(0, NONCE_BYTES));
        decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
        const plain = Buffer.concat([
          decipher.update(sealed.subarray(NONCE_BYTES, sealed.length - TAG_BYTES)),
          decipher.final(),
        ]);
        return temporal.api.common.v1.Payload.decode(plain);
      } catch (err) {
        throw new PayloadDecryptionError(
          `payload encrypted with key "${id}" does not decrypt: altered, or another key of that id`,
          {
            field: KEY_ID_METADATA,
            cause: err,
          },
        );
      }
    });
  }
}

/** The failure converter that puts failure messages and stack traces into encrypted payloads. */
export const ENCODED_FAILURES_PATH = require.resolve('./encoded-failures');

/** The data converter part that installs the codec (payloads and failures); empty without keys. */
export function codecConverter(keys: CodecKeys | undefined): {
  dataConverter?: { payloadCodecs: PayloadCodec[]; failureConverterPath: string };
} {
  return keys
    ? {
        dataConverter: {
          payloadCodecs: [new EncryptionCodec(keys)],
          failureConverterPath: ENCODED_FAILURES_PATH,
        },
      }
    : {};
}
