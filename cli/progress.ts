/**
 * Progress for people: a single rewritten line on a TTY, plain lines (every few updates) otherwise.
 * Always on stderr, so stdout stays the command's result.
 */
export class ProgressLine {
  private readonly tty = Boolean(process.stderr.isTTY);
  private last = '';

  update(text: string, milestone = false): void {
    if (this.tty) {
      process.stderr.write(`\r\x1b[2K${text}`);
      this.last = text;
    } else if (milestone) {
      process.stderr.write(text + '\n');
    }
  }

  log(text: string): void {
    if (this.tty && this.last) process.stderr.write(`\r\x1b[2K${text}\n${this.last}`);
    else process.stderr.write(text + '\n');
  }

  done(): void {
    if (this.tty && this.last) process.stderr.write('\n');
    this.last = '';
  }
}
