/**
 * Workflow histories to and from JSON files (the protojson form `temporal workflow show --output json`
 * writes), for the replay test and scripts/record-history.ts; and a run's history as that command shows it.
 *
 * The SDK's own `historyToJSON` / `historyFromJSON` (@temporalio/common/lib/proto-utils) fail with
 * "type must be a Type" in this dependency tree: @grpc/proto-loader holds the top-level protobufjs@7, so
 * npm nests a separate protobufjs@8 copy under @temporalio/common and another under @temporalio/proto, and
 * protojson's `instanceof Type` check rejects the History type of the other copy. So when the SDK's
 * helpers throw that error, the same conversion runs with the protojson of the protobufjs copy that
 * @temporalio/proto's root was built with. (After a dedupe that leaves one copy, the SDK's path works.)
 * The fallback reads enum values as protojson writes them (EVENT_TYPE_…); it does not convert the
 * PascalCase enum names of histories downloaded from old Web UI versions, which the SDK's path does.
 */
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import * as sdk from '@temporalio/common/lib/proto-utils';
import * as proto from '@temporalio/proto';
import { patchProtobufRoot } from '@temporalio/proto/lib/patch-protobuf-root';
import { ensureTemporalCli } from '../../infra/temporal';

export type History = proto.temporal.api.history.v1.IHistory;

interface ProtoJson {
  toJson(type: unknown, message: unknown): unknown;
  fromJson(type: unknown, json: unknown, options?: { ignoreUnknownFields?: boolean }): History | null;
}

let fallback: { protojson: ProtoJson; historyType: unknown } | undefined;
function sameCopy() {
  if (!fallback) {
    const protojson = createRequire(require.resolve('@temporalio/proto'))(
      'protobufjs/ext/protojson',
    ) as ProtoJson;
    const root = patchProtobufRoot(proto as unknown as Record<string, unknown>) as unknown as {
      lookupType(name: string): unknown;
    };
    fallback = { protojson, historyType: root.lookupType('temporal.api.history.v1.History') };
  }
  return fallback;
}

const isCopyMismatch = (err: unknown) => err instanceof TypeError && err.message === 'type must be a Type';

export function historyToJSON(history: History): string {
  try {
    return sdk.historyToJSON(history);
  } catch (err) {
    if (!isCopyMismatch(err)) throw err;
  }
  const { protojson, historyType } = sameCopy();
  return JSON.stringify(
    protojson.toJson(historyType, proto.temporal.api.history.v1.History.fromObject(history)),
    null,
    2,
  );
}

export function historyFromJSON(json: unknown): History {
  try {
    return sdk.historyFromJSON(json);
  } catch (err) {
    if (!isCopyMismatch(err)) throw err;
  }
  const { protojson, historyType } = sameCopy();
  const loaded = protojson.fromJson(historyType, json, { ignoreUnknownFields: true });
  if (!loaded) throw new TypeError('invalid history JSON');
  return loaded;
}

/** A run's history as `temporal workflow show --output json` prints it, and the data of its payloads. */
export interface ShownHistory {
  /** The JSON as printed (payload data in base64). */
  json: string;
  /** The data of every payload but the search attributes', decoded from base64: inputs, results, memos... */
  payloads: string;
  /** The search attributes' payloads, decoded: Temporal indexes these, so a codec leaves them in clear. */
  searchAttributes: string;
}

/** A run's history as an operator sees it (`temporal workflow show --output json`), payloads decoded. */
export async function shownHistory(address: string, workflowId: string): Promise<ShownHistory> {
  const { stdout } = await promisify(execFile)(
    ensureTemporalCli(),
    [
      'workflow',
      'show',
      '--workflow-id',
      workflowId,
      '--address',
      address,
      '--namespace',
      'default',
      '--output',
      'json',
    ],
    { maxBuffer: 64 * 1024 * 1024 },
  );
  const payloads: string[] = [];
  const searchAttributes: string[] = [];
  const walk = (value: unknown, into: string[]): void => {
    if (Array.isArray(value)) value.forEach((v) => walk(v, into));
    else if (value !== null && typeof value === 'object') {
      for (const [key, v] of Object.entries(value)) {
        if (key === 'data' && typeof v === 'string') into.push(Buffer.from(v, 'base64').toString('latin1'));
        else walk(v, key === 'searchAttributes' ? searchAttributes : into);
      }
    }
  };
  walk(JSON.parse(stdout), payloads);
  return { json: stdout, payloads: payloads.join('\n'), searchAttributes: searchAttributes.join('\n') };
}
