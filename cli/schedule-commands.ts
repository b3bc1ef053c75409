/** `ckpt schedule eval|retention create`, `ckpt schedule list | delete | trigger`: Temporal Schedules. */
import { programReference } from './program-args';
import { resolve } from 'node:path';
import { ScheduleOverlapPolicy, ScheduleNotFoundError } from '@temporalio/client';
import { absoluteLocation, InvalidArgumentError } from '../checkpoint';
import { loadConfig, parseDuration } from '../temporal.config';
import { CkptDir, CkptTag } from '../workflows/visibility';
import {
  type Command,
  expectPositionals,
  flag,
  note,
  out,
  positional,
  str,
  table,
  tagOfDir,
  UsageError,
} from './args';
import { registeredSearchAttributes, retentionFromArgs, RETENTION_OPTIONS } from './pipeline-commands';
import { connectClient, workflowSettings } from './temporal-client';

function scheduleId(kind: string, dir: string): string {
  return `ckpt-${kind}-${dir.replace(/\/+$/, '').split('/').slice(-2).join('-')}`.replace(
    /[^A-Za-z0-9._-]/g,
    '-',
  );
}

function createCommand(kind: 'eval' | 'retention'): Command {
  return {
    name: `schedule ${kind} create`,
    summary:
      kind === 'eval'
        ? 'Schedule evaluation of every new checkpoint of a directory (overlapping runs are skipped).'
        : 'Schedule a retention policy on a directory (overlapping runs are skipped).',
    usage:
      kind === 'eval'
        ? 'ckpt schedule eval create --dir DIR --every D [--id ID] [--program PATH|NAME] [--data FILE]\n\n' +
          '--program: the program that wrote the checkpoints, when it is not built in (a path is made absolute;\n' +
          'a name must be registered on the training workers).'
        : 'ckpt schedule retention create --dir DIR --every D --keep-last N [--keep-best K --metric M --mode min|max]\n' +
          '                               [--keep-every S] [--pin STEP]... [--id ID]',
    options: {
      dir: { type: 'string' },
      every: { type: 'string' },
      id: { type: 'string' },
      ...(kind === 'eval' ? { data: { type: 'string' }, program: { type: 'string' } } : RETENTION_OPTIONS),
    },
    async run(args) {
      expectPositionals(args, 0, `schedule ${kind} create`);
      const dirArg = str(args, 'dir');
      const every = str(args, 'every');
      if (!dirArg) throw new UsageError(`schedule ${kind} create: --dir DIR is required`, { field: 'dir' });
      if (!every)
        throw new UsageError(`schedule ${kind} create: --every D is required (e.g. 10m, 1h)`, {
          field: 'every',
        });
      const dir = absoluteLocation(dirArg);
      const tag = tagOfDir(dir);
      const config = loadConfig();
      const settings = workflowSettings(config.temporal);
      const policy = kind === 'retention' ? retentionFromArgs(args) : undefined;
      if (kind === 'retention' && !policy)
        throw new UsageError('schedule retention create: give at least one policy flag');
      const id = str(args, 'id') ?? scheduleId(kind, dir);
      const client = await connectClient(config.temporal);
      // The runs carry CkptTag and CkptDir like a pipeline, so one visibility query finds all work on a
      // directory; only those the namespace has registered, as for a pipeline.
      const usable = await registeredSearchAttributes(
        client,
        config.temporal.namespace,
        `the ${kind} schedule starts its workflows`,
      );
      const attributes = [
        { key: CkptTag, value: tag },
        { key: CkptDir, value: dir },
      ].filter((pair) => usable.has(pair.key.name));
      const data = str(args, 'data');
      const program = kind === 'eval' ? str(args, 'program') : undefined;
      await client.schedule.create({
        scheduleId: id,
        spec: { intervals: [{ every: parseDuration(every, '--every') }] },
        policies: { overlap: ScheduleOverlapPolicy.SKIP },
        action: {
          type: 'startWorkflow',
          workflowType: kind === 'eval' ? 'evaluateNewCheckpoints' : 'applyRetention',
          taskQueue: config.temporal.taskQueues.control,
          args: [
            kind === 'eval'
              ? {
                  dir,
                  settings,
                  ...(program ? { program: programReference(program) } : {}),
                  ...(data ? { data: resolve(data) } : {}),
                }
              : { dir, policy, settings },
          ],
          ...(attributes.length > 0 ? { typedSearchAttributes: attributes } : {}),
        },
        memo: { dir, kind },
        state: {
          note:
            kind === 'eval'
              ? `evaluate new checkpoints of ${dir} every ${every}`
              : `apply retention ${JSON.stringify(policy)} to ${dir} every ${every}`,
        },
      });
      note(`created schedule ${id}`);
      out(id);
      return 0;
    },
  };
}

const listCommand: Command = {
  name: 'schedule list',
  summary: 'List schedules.',
  usage: 'ckpt schedule list [--json]',
  options: { json: { type: 'boolean' } },
  async run(args) {
    expectPositionals(args, 0, 'schedule list');
    const client = await connectClient(loadConfig().temporal);
    const rows: Array<{ id: string; workflow: string; note: string; paused: boolean }> = [];
    for await (const s of client.schedule.list()) {
      rows.push({
        id: s.scheduleId,
        workflow: s.action?.type === 'startWorkflow' ? s.action.workflowType : '',
        note: s.state.note ?? '',
        paused: s.state.paused,
      });
    }
    if (flag(args, 'json')) out(JSON.stringify(rows, null, 2));
    else if (rows.length === 0) note('no schedules');
    else
      out(
        table([
          ['ID', 'WORKFLOW', 'PAUSED', 'NOTE'],
          ...rows.map((r) => [r.id, r.workflow, String(r.paused), r.note]),
        ]),
      );
    return 0;
  },
};

function onSchedule(name: 'delete' | 'trigger', summary: string): Command {
  return {
    name: `schedule ${name}`,
    summary,
    usage: `ckpt schedule ${name} ID`,
    options: {},
    async run(args) {
      expectPositionals(args, 1, `schedule ${name}`);
      const id = positional(args, 0, 'ID', `schedule ${name}`);
      const handle = (await connectClient(loadConfig().temporal)).schedule.getHandle(id);
      try {
        if (name === 'delete') await handle.delete();
        else await handle.trigger(ScheduleOverlapPolicy.ALLOW_ALL);
      } catch (err) {
        if (err instanceof ScheduleNotFoundError)
          throw new InvalidArgumentError(`no schedule with id ${id}`, { field: 'ID' });
        throw err;
      }
      note(`${name === 'delete' ? 'deleted' : 'triggered'} schedule ${id}`);
      return 0;
    },
  };
}

export const scheduleCommands: Command[] = [
  createCommand('eval'),
  createCommand('retention'),
  listCommand,
  onSchedule('delete', 'Delete a schedule.'),
  onSchedule('trigger', 'Run a schedule now (regardless of overlap).'),
];
