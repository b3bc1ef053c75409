/** `ckpt codec-server`: decodes the pipelines' encrypted payloads for the Temporal Web UI (workers/codec-server.ts). */
import { EncryptionCodec } from '../activities/payload-codec';
import { InvalidArgumentError } from '../checkpoint';
import { loadConfig, parsePort } from '../temporal.config';
import { serveCodec } from '../workers/codec-server';
import { type Command, expectPositionals, list, note, str, UsageError } from './args';

export const codecServerCommand: Command = {
  name: 'codec-server',
  summary: 'Serve the payload codec (CKPT_CODEC_KEYS) to the Temporal Web UI: POST /decode and /encode.',
  usage:
    'ckpt codec-server --port P [--host ADDR] [--origin URL]...\n\n' +
    'Decrypts payloads with the keys of CKPT_CODEC_KEYS (or CKPT_CODEC_KEY_FILE) for the Web UI, whose\n' +
    'address (--origin, default CKPT_UI_ADDRESS) may call it from a browser. With CKPT_CODEC_AUTH set, a\n' +
    'request must carry exactly that Authorization header. Listens on 127.0.0.1 unless --host says otherwise.\n' +
    'Runs until SIGINT/SIGTERM.',
  options: { port: { type: 'string' }, host: { type: 'string' }, origin: { type: 'string', multiple: true } },
  async run(args) {
    expectPositionals(args, 0, 'codec-server');
    const portText = str(args, 'port');
    if (portText === undefined) throw new UsageError('codec-server needs --port P', { field: 'port' });
    const config = loadConfig();
    const keys = config.temporal.codecKeys;
    if (!keys) {
      throw new InvalidArgumentError('codec-server: no keys; set CKPT_CODEC_KEYS or CKPT_CODEC_KEY_FILE', {
        field: 'CKPT_CODEC_KEYS',
      });
    }
    const origins = list(args, 'origin');
    const server = await serveCodec({
      codec: new EncryptionCodec(keys),
      port: parsePort(portText, '--port'),
      host: str(args, 'host'),
      origins: origins.length > 0 ? origins : [config.temporal.uiAddress],
      auth: config.codecAuth,
    });
    note(
      `codec server on ${server.url} (keys ${Object.keys(keys.keys).join(', ')}; ${config.codecAuth ? 'Authorization required' : 'no Authorization required'}); Ctrl-C stops it`,
    );
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    await server.close();
    return 0;
  },
};
