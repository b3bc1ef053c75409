/**
 * Payload encryption (AES-256-GCM, key id in the metadata, rotation by id), the keys' settings, and the
 * codec server the Web UI decodes through: CORS for the UI's origin, the Authorization check.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import {
  ENCRYPTED_ENCODING,
  EncryptionCodec,
  KEY_ID_METADATA,
  PayloadDecryptionError,
} from '../../activities/payload-codec';
import { loadCodecKeys, type CodecKeys } from '../../temporal.config';
import { serveCodec, type CodecServer } from '../../workers/codec-server';
import { tempDir } from '../helpers/tmp';

const old = randomBytes(32);
const current = randomBytes(32);
const keysOf = (...entries: Array<[string, Buffer]>): CodecKeys => ({
  active: entries[0]![0],
  keys: Object.fromEntries(entries),
});
const input = { dir: '/runs/base_checkpoints/secret-tag', metrics: { val_bpb: 1.2345 } };
const payload = (): Payload => defaultPayloadConverter.toPayload(input);
const text = (p: Payload) => Buffer.from(p.data ?? []).toString('latin1');
const meta = (p: Payload, k: string) => Buffer.from(p.metadata?.[k] ?? []).toString();

describe('EncryptionCodec', () => {
  it('encrypts: no plaintext left, the key id in the metadata, and back to the same payload', async () => {
    const codec = new EncryptionCodec(keysOf(['k1', current]));
    const [sealed] = await codec.encode([payload()]);
    assert.equal(meta(sealed!, 'encoding'), ENCRYPTED_ENCODING);
    assert.equal(meta(sealed!, KEY_ID_METADATA), 'k1');
    assert.ok(!text(sealed!).includes('secret-tag'));
    assert.ok(!text(sealed!).includes('val_bpb'));
    const [opened] = await codec.decode([sealed!]);
    assert.deepEqual(defaultPayloadConverter.fromPayload(opened!), input);
    // A fresh nonce each time: the same payload never encrypts to the same bytes.
    const [again] = await codec.encode([payload()]);
    assert.notDeepEqual(Buffer.from(again!.data!), Buffer.from(sealed!.data!));
  });

  it('rotates by id: the first key encrypts, older keys still decrypt, a dropped key is named', async () => {
    const [before] = await new EncryptionCodec(keysOf(['k1', old])).encode([payload()]);
    const rotated = new EncryptionCodec(keysOf(['k2', current], ['k1', old]));
    const [after] = await rotated.encode([payload()]);
    assert.equal(meta(after!, KEY_ID_METADATA), 'k2');
    for (const p of await rotated.decode([before!, after!])) {
      assert.deepEqual(defaultPayloadConverter.fromPayload(p), input);
    }
    await assert.rejects(
      new EncryptionCodec(keysOf(['k2', current])).decode([before!]),
      (err: Error) =>
        err instanceof PayloadDecryptionError &&
        /key "k1", which is not among the configured keys \(k2\)/.test(err.message),
    );
  });

  it('refuses altered bytes, and a key of the same id that is not the one', async () => {
    const codec = new EncryptionCodec(keysOf(['k1', current]));
    const [sealed] = await codec.encode([payload()]);
    const altered = Buffer.from(sealed!.data!);
    altered[20]! ^= 1;
    await assert.rejects(codec.decode([{ ...sealed!, data: altered }]), PayloadDecryptionError);
    await assert.rejects(new EncryptionCodec(keysOf(['k1', old])).decode([sealed!]), /does not decrypt/);
  });

  it('passes payloads that are not encrypted (histories from before the codec)', async () => {
    const plain = payload();
    assert.deepEqual(await new EncryptionCodec(keysOf(['k1', current])).decode([plain]), [plain]);
  });
});

describe('codec keys from the environment or a file', () => {
  const b64 = (k: Buffer) => k.toString('base64');
  it('CKPT_CODEC_KEYS: id:base64 entries, the first active', () => {
    const keys = loadCodecKeys({ CKPT_CODEC_KEYS: `new:${b64(current)}, old:${b64(old)}` });
    assert.equal(keys!.active, 'new');
    assert.deepEqual(keys!.keys, { new: current, old });
    assert.equal(loadCodecKeys({}), undefined);
  });

  it('CKPT_CODEC_KEY_FILE: one entry a line, comments allowed', () => {
    const file = join(tempDir(), 'keys');
    writeFileSync(file, `# rotated 2026-12\nk2:${b64(current)}\nk1:${b64(old)}  # until old runs are gone\n`);
    assert.deepEqual(loadCodecKeys({ CKPT_CODEC_KEY_FILE: file })!.keys, { k2: current, k1: old });
  });

  it('a bad entry is named by its id, never by its value', () => {
    const short = randomBytes(16).toString('base64');
    assert.throws(
      () => loadCodecKeys({ CKPT_CODEC_KEYS: `k1:${short}` }),
      (err: Error) =>
        /entry 1 \(key id "k1"\) must be ID:KEY with a 32-byte key/.test(err.message) &&
        !err.message.includes(short),
    );
    assert.throws(() => loadCodecKeys({ CKPT_CODEC_KEYS: `a:${b64(old)},a:${b64(old)}` }), /listed twice/);
  });
});

describe('codec server', () => {
  const UI = 'http://ui.example:8233';
  let server: CodecServer;
  const codec = new EncryptionCodec(keysOf(['k1', current]));
  before(async () => {
    server = await serveCodec({ codec, port: 0, origins: [UI], auth: 'Bearer ui-token' });
  });
  after(() => server.close());

  const jsonPayload = (p: Payload) => ({
    metadata: Object.fromEntries(
      Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v!).toString('base64')]),
    ),
    data: Buffer.from(p.data ?? []).toString('base64'),
  });
  const post = (path: string, payloads: Payload[], headers: Record<string, string>) =>
    fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-namespace': 'default', ...headers },
      body: JSON.stringify({ payloads: payloads.map(jsonPayload) }),
    });

  it('decodes for the UI with the right Authorization, with CORS for its origin', async () => {
    const sealed = await codec.encode([payload()]);
    const res = await post('/decode', sealed, { authorization: 'Bearer ui-token', origin: UI });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), UI);
    const body = (await res.json()) as { payloads: Array<{ data: string }> };
    assert.deepEqual(JSON.parse(Buffer.from(body.payloads[0]!.data, 'base64').toString()), input);
  });

  it('answers the preflight for the UI origin only', async () => {
    const preflight = (origin: string) =>
      fetch(`${server.url}/decode`, {
        method: 'OPTIONS',
        headers: {
          origin,
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization',
        },
      });
    const ok = await preflight(UI);
    assert.equal(ok.status, 204);
    assert.match(ok.headers.get('access-control-allow-headers') ?? '', /authorization/);
    assert.equal((await preflight('http://evil.example')).headers.get('access-control-allow-origin'), null);
  });

  it('refuses a request without the Authorization value, and decodes nothing for it', async () => {
    const sealed = await codec.encode([payload()]);
    for (const headers of [{}, { authorization: 'Bearer wrong' }] as Array<Record<string, string>>) {
      const res = await post('/decode', sealed, headers);
      assert.equal(res.status, 401);
      assert.ok(!(await res.text()).includes('secret-tag'));
    }
  });
});
