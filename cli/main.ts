/**
 * `ckpt`: stdout carries only results (a number, a tag, one JSON document or a table); logs and progress
 * go to stderr. Exit codes: 0 ok, 1 a check failed, 2 bad usage or bad input. Errors are one line; the
 * stack trace only with --debug.
 */
import { ERROR_REPORT_ENV, errorReport } from '../activities/child';
import { CheckpointError, configureLogging, configureS3 } from '../checkpoint';
import { loadConfig } from '../temporal.config';
import { type Command, formatUsage, parse, str, UsageError } from './args';

/** The program `--program` names, loaded only by commands that take one (program code is not light). */
async function loadProgramArg(argv: string[], workerName: boolean) {
  const { programFromArgv, programFlag } = require('./program-args') as typeof import('./program-args');
  const { ProgramNotRegisteredError } = require('../program/errors') as typeof import('../program/errors');
  try {
    return await programFromArgv(argv);
  } catch (err) {
    if (!workerName || !(err instanceof ProgramNotRegisteredError)) throw err;
    process.stderr.write(
      `ckpt: program "${programFlag(argv)}" is not known here; the training workers must have it registered\n`,
    );
    return undefined;
  }
}

function programOptions(program: import('../program/contract').TrainingProgram<unknown>) {
  return (require('./program-args') as typeof import('./program-args')).programOptions(program);
}

function programHelp(program: import('../program/contract').TrainingProgram<unknown>) {
  return (require('./program-args') as typeof import('./program-args')).programHelp(program);
}

/**
 * The command modules, loaded on demand: a command pays only for what it uses. `ckpt train` (the child
 * every training segment runs) does not load the Temporal client and worker, the report's charting
 * library or the metrics registry; `ckpt --help` loads them all. `first` lists the first word of every
 * command a module defines (test/cli/main-lazy.test.ts checks the table against the modules).
 */
export const COMMAND_MODULES: ReadonlyArray<{ first: readonly string[]; load: () => Command[] }> = [
  {
    first: ['train', 'eval', 'sample'],
    load: () => (require('./train-commands') as typeof import('./train-commands')).trainCommands,
  },
  {
    first: ['list', 'last-step', 'largest', 'inspect', 'verify', 'prune', 'gc'],
    load: () =>
      (require('./checkpoint-commands') as typeof import('./checkpoint-commands')).checkpointCommands,
  },
  {
    first: ['commit'],
    load: () => [(require('./commit-command') as typeof import('./commit-command')).commitCommand],
  },
  {
    first: ['copy'],
    load: () => [(require('./copy-command') as typeof import('./copy-command')).copyCommand],
  },
  {
    first: ['import'],
    load: () => [(require('./import-command') as typeof import('./import-command')).importCommand],
  },
  {
    first: ['logits'],
    load: () => [(require('./logits-command') as typeof import('./logits-command')).logitsCommand],
  },
  {
    first: ['report'],
    load: () => [(require('./report-command') as typeof import('./report-command')).reportCommand],
  },
  {
    first: ['pipeline', 'worker', 'dev-server'],
    load: () => (require('./pipeline-commands') as typeof import('./pipeline-commands')).pipelineCommands,
  },
  {
    first: ['codec-server'],
    load: () => [(require('./codec-command') as typeof import('./codec-command')).codecServerCommand],
  },
  {
    first: ['schedule'],
    load: () => (require('./schedule-commands') as typeof import('./schedule-commands')).scheduleCommands,
  },
];

/**
 * Loads what a training or evaluation child needs (the train commands, the model code and tfjs), starts
 * the compute backend and a save thread, without running anything: a worker's warm standby child calls
 * this while it waits for its command.
 */
export function preload(): void {
  COMMAND_MODULES[0]!.load();
  // The train commands require the loop and the model code only when they run them: load them now.
  require('../train/trainer');
  require('../train/evaluate');
  require('../train/sample');
  require('../model/gpt');
  require('../model/build');
  const { initBackend } = require('../model/backend') as typeof import('../model/backend');
  const { prestartSaveThread } =
    require('../checkpoint/async-save') as typeof import('../checkpoint/async-save');
  const config = loadConfig();
  // The backend the command will ask for (initBackend is idempotent), and the thread its first save uses.
  void initBackend({ force: config.backend }).catch(() => undefined);
  prestartSaveThread(config.s3);
}

/** Every command, in the order of `ckpt --help` (loads every module). */
export function allCommands(): Command[] {
  return COMMAND_MODULES.flatMap((m) => m.load());
}

/** One line a command: its name (less `prefix`) and the first line of its summary. */
function commandLines(commands: Command[], prefix = ''): string[] {
  const names = commands.map((c) => c.name.slice(prefix.length));
  const width = Math.max(...names.map((n) => n.length));
  return commands.map((c, i) => `  ${names[i]!.padEnd(width)}  ${c.summary.split('\n')[0]}`);
}

function mainUsage(commands: Command[]): string {
  const lines = commandLines(commands);
  return [
    'ckpt: durable training pipelines and checkpoints',
    '',
    'Usage: ckpt COMMAND [options]     (ckpt COMMAND --help for its flags)',
    '',
    'Commands:',
    ...lines,
    '',
    'Exit codes: 0 ok, 1 a check failed, 2 bad usage or bad input. --debug prints stack traces.',
    '',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug');
  // Read by native TensorFlow when it loads (model/backend.ts keeps it to warnings otherwise).
  if (debug) process.env.TF_CPP_MIN_LOG_LEVEL ??= '0';
  try {
    const config = loadConfig();
    configureLogging({ level: config.logLevel, allRanks: config.logAllRanks, format: config.logFormat });
    configureS3(config.s3);
    const [name, sub] = argv;
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      process.stdout.write(mainUsage(allCommands()));
      return name === undefined ? 2 : 0;
    }
    const commands = COMMAND_MODULES.find((m) => m.first.includes(name))?.load() ?? allCommands();
    // Two-word commands ("pipeline start", "schedule eval create") are matched longest first.
    const command =
      commands.find((c) => c.name === `${name} ${sub} ${argv[2]}`) ??
      commands.find((c) => c.name === `${name} ${sub}`) ??
      commands.find((c) => c.name === name);
    if (!command) {
      // A group ("pipeline", "schedule eval"): the longest one the words before the flags name.
      const firstFlag = argv.findIndex((a) => a.startsWith('-'));
      const words = (firstFlag === -1 ? argv : argv.slice(0, firstFlag)).slice(0, 2).join(' ');
      const group = [words, name]
        .map((prefix) => ({ prefix, members: commands.filter((c) => c.name.startsWith(`${prefix} `)) }))
        .find((g) => g.members.length > 0);
      if (group?.prefix === words && (argv.includes('--help') || argv.includes('-h'))) {
        process.stdout.write(
          [
            `Usage: ckpt ${group.prefix} SUBCOMMAND [options]     (ckpt ${group.prefix} SUBCOMMAND --help for its flags)`,
            '',
            'Subcommands:',
            ...commandLines(group.members, `${group.prefix} `),
            '',
          ].join('\n'),
        );
        return 0;
      }
      throw new UsageError(
        group
          ? `"${group.prefix}" needs a subcommand: ${group.members.map((c) => c.name).join(', ')}`
          : `unknown command "${name}" (ckpt --help lists the commands)`,
      );
    }
    const rest = argv.slice(command.name.split(' ').length);
    // With --exec, --program names the command program: there is no code to load.
    const execs = rest.some((a) => a === '--exec' || a.startsWith('--exec='));
    const program =
      command.takesProgram && !execs
        ? await loadProgramArg(rest, command.takesProgram === 'or-worker-name')
        : undefined;
    const extra = program ? programOptions(program) : {};
    const taken = Object.keys(extra).filter((f) => f in command.options || f === 'help' || f === 'debug');
    if (program && taken.length > 0) {
      const { ProgramContractError } = require('../program/errors') as typeof import('../program/errors');
      throw new ProgramContractError(
        `program "${program.name}" declares flags that ckpt ${command.name} has already: ${taken.map((f) => `--${f}`).join(', ')}`,
        { field: 'flags' },
      );
    }
    const args = parse(command, rest, extra);
    args.program = program;
    if (command.takesProgram && !program) args.remoteProgram = str(args, 'program');
    if (args.values.help) {
      process.stdout.write(formatUsage(command));
      if (program) process.stdout.write(`\nFlags of program ${program.name}:\n${programHelp(program)}\n`);
      return 0;
    }
    return await command.run(args);
  } catch (err) {
    const code = err instanceof CheckpointError ? err.exitCode : 1;
    // One line: some messages (node's parseArgs) span several.
    const message = (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, ' ').trim();
    const hint = !debug && !(err instanceof CheckpointError) ? ' (run with --debug for the stack trace)' : '';
    process.stderr.write(`ckpt: error: ${message}${hint}\n`);
    if (debug && err instanceof Error && err.stack) process.stderr.write(err.stack + '\n');
    // A child of an activity: say what failed and whether a retry can help (activities/child.ts).
    if (process.env[ERROR_REPORT_ENV] === '1')
      process.stdout.write(JSON.stringify(errorReport(err, message)) + '\n');
    return code;
  }
}
