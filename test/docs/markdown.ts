/**
 * Reading shell examples out of Markdown: fenced blocks with the `##` section they sit in and the
 * `<!-- readme-test: NAME -->` marker before them, the command lines of a block (continuations joined,
 * comments kept for bash), and the `ckpt` command names a synopsis declares or a command line uses.
 */

export interface FencedBlock {
  /** The `## ` heading the block is under ('' before the first). */
  section: string;
  /** NAME of a `<!-- readme-test: NAME -->` line right before the opening fence. */
  marker?: string;
  /** 1-based line number of the block's first content line. */
  firstLine: number;
  lines: string[];
}

export interface CommandLine {
  /** As written: continuation lines stay joined by backslash-newline, a trailing comment stays. */
  text: string;
  /** 1-based line number in the Markdown file. */
  lineNo: number;
  /** The command without its comment, continuations joined by a space. */
  command: string;
  /** X of a trailing `# → X` comment: what the command prints on stdout. */
  expect?: string;
}

export function fencedBlocks(markdown: string): FencedBlock[] {
  const blocks: FencedBlock[] = [];
  const lines = markdown.split('\n');
  let section = '';
  let open: FencedBlock | undefined;
  lines.forEach((line, i) => {
    if (open) {
      if (/^```\s*$/.test(line)) {
        blocks.push(open);
        open = undefined;
      } else open.lines.push(line);
      return;
    }
    if (line.startsWith('## ')) section = line.slice(3).trim();
    if (line.startsWith('```')) {
      let j = i - 1;
      while (j >= 0 && lines[j]!.trim() === '') j--;
      const marker = j >= 0 ? /^<!--\s*readme-test:\s*(\S+)\s*-->$/.exec(lines[j]!.trim())?.[1] : undefined;
      open = { section, marker, firstLine: i + 2, lines: [] };
    }
  });
  if (open) throw new Error(`unclosed code block starting at line ${open.firstLine - 1}`);
  return blocks;
}

/** A comment: `#` at the start of the line or after whitespace (the README's commands quote no `#`). */
const COMMENT = /(^|\s)#.*$/;

/** The block's command lines: blank and comment-only lines skipped, `\` continuations joined. */
export function commandLines(block: FencedBlock): CommandLine[] {
  const out: CommandLine[] = [];
  let pending: { parts: string[]; lineNo: number } | undefined;
  block.lines.forEach((line, i) => {
    if (!pending && (line.trim() === '' || line.trim().startsWith('#'))) return;
    pending ??= { parts: [], lineNo: block.firstLine + i };
    pending.parts.push(line);
    if (/\\$/.test(line)) return;
    const text = pending.parts.join('\n');
    const command = pending.parts
      .map((p) => p.replace(/\\$/, '').replace(COMMENT, '$1').trim())
      .join(' ')
      .trim();
    const expect = /\s#\s*→\s*(.*?)\s*$/.exec(line)?.[1];
    out.push({ text, lineNo: pending.lineNo, command, ...(expect !== undefined ? { expect } : {}) });
    pending = undefined;
  });
  if (pending) throw new Error(`line ${pending.lineNo}: a continuation runs past the end of the block`);
  return out;
}

/** Comment-only lines of a block. */
export function commentLines(block: FencedBlock): string[] {
  return block.lines.filter((l) => l.trim().startsWith('#'));
}

const WORD = /^[a-z][a-z-]*$/;

/**
 * The command names a synopsis line declares: `ckpt prune DIR ...` → prune; `ckpt pipeline pause|resume|stop ID`
 * → three; `ckpt schedule list | delete ID | trigger ID` → schedule list, schedule delete, schedule trigger.
 */
export function synopsisNames(line: string): string[] {
  if (!line.startsWith('ckpt ')) return [];
  const [first, ...alternatives] = line.slice(5).split(/\s+\|\s+/);
  const leading = (part: string) => {
    const words: string[] = [];
    for (const token of part.trim().split(/\s+/)) {
      if (!token.split('|').every((w) => WORD.test(w))) break;
      words.push(token);
    }
    return words;
  };
  const expand = (words: string[]): string[] => {
    const last = words.at(-1);
    if (last === undefined) return [];
    return last.split('|').map((w) => [...words.slice(0, -1), w].join(' '));
  };
  const head = leading(first!);
  return [...expand(head), ...alternatives.flatMap((alt) => expand([...head.slice(0, -1), ...leading(alt)]))];
}

/** Every known command a command line runs (`ckpt` followed by the longest matching name). */
export function namesUsed(command: string, known: readonly string[]): string[] {
  const tokens = command.split(/\s+/);
  const used: string[] = [];
  tokens.forEach((token, i) => {
    if (token !== 'ckpt' && !token.endsWith('(ckpt')) return;
    const match = known
      .filter((name) => name.split(' ').every((w, k) => tokens[i + 1 + k] === w))
      .sort((a, b) => b.length - a.length)[0];
    if (match) used.push(match);
  });
  return used;
}
