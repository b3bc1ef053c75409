/**
 * Credentials never reach a log line: fields that hold them are replaced, and the signing parts of
 * presigned URLs are cut from every message and field, in both formats; everything else stays readable.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { configureLogging, getLogger, log0 } from '../../checkpoint/log';

const SECRET = 'sEcReT-7f3a9c';
const lines: string[] = [];
const destination = { write: (line: string) => void lines.push(line) };

after(() => configureLogging({}));

function logEverything(): string {
  lines.length = 0;
  const signed = `https://bucket.s3.example/runs/model_000010.safetensors?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${SECRET}&X-Amz-Signature=${SECRET}`;
  log0(`fetching ${signed}`, {
    apiKey: SECRET,
    codecKey: SECRET,
    headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'text/plain' },
    connection: { apiKey: SECRET, address: 'temporal.example:7233' },
    s3: { credentials: { accessKeyId: SECRET, secretAccessKey: SECRET } },
    env: { AWS_SECRET_ACCESS_KEY: SECRET },
    url: signed,
  });
  getLogger().error({ err: new Error('upload refused'), sessionToken: SECRET }, 'S3 said no');
  return lines.join('');
}

describe('log redaction', () => {
  for (const format of ['json', 'text'] as const) {
    it(`${format} lines hold no credential, and keep what is not one`, () => {
      configureLogging({ level: 'debug', format, textFields: true, destination });
      const text = logEverything();
      assert.ok(!text.includes(SECRET), text);
      assert.match(text, /\[redacted\]/);
      assert.match(
        text,
        /bucket\.s3\.example\/runs\/model_000010\.safetensors\?X-Amz-Algorithm=AWS4-HMAC-SHA256/,
      );
      assert.match(text, /temporal\.example:7233/);
      assert.match(text, /upload refused/);
    });
  }
});
