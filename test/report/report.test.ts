/**
 * `ckpt report` end to end: a small real run (train, eval every checkpoint, prune), the report written, and
 * the page opened in headless Chromium with JavaScript off, to check that the plots and the table are there.
 * Chromium is Debian's package (infra/install-tools.sh installs it); without it this test fails.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { readRetentionLog } from '../../checkpoint';
import { ckpt } from '../helpers/cli';
import { tempDir } from '../helpers/tmp';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function run(args: string[]): string {
  const res = ckpt(args);
  assert.equal(res.code, 0, `ckpt ${args.join(' ')} failed (${res.code}):\n${res.stderr}`);
  return res.stdout.trim();
}

describe('ckpt report', () => {
  const work = tempDir('ckpt-report-');
  const root = join(work, 'R');
  const dir = join(root, 'base_checkpoints', 'd1');
  const page1 = join(work, 'dir report.html');
  const page2 = join(work, 'root-report.html');
  let browser: Promise<Browser> | undefined;

  /** A fresh page with JavaScript off; fails (never skips) when Chromium is missing. */
  async function openPage(file: string): Promise<Page> {
    assert.ok(
      existsSync(CHROMIUM),
      `Chromium not found at ${CHROMIUM}: run infra/install-tools.sh (apt-get install chromium) or set CHROMIUM_PATH`,
    );
    browser ??= chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const context = await (
      await browser
    ).newContext({ javaScriptEnabled: false, viewport: { width: 1300, height: 900 } });
    const page = await context.newPage();
    await page.goto(pathToFileURL(file).href);
    return page;
  }

  before(async () => {
    run([
      'train',
      '--root',
      root,
      '--depth',
      '1',
      '--n-embd',
      '32',
      '--seq-len',
      '32',
      '--batch',
      '4',
      '--steps',
      '12',
      '--save-every',
      '4',
    ]);
    for (const step of ['4', '8', '12']) run(['eval', dir, '--step', step]);
    run(['prune', dir, '--keep-last', '2']);
    assert.equal(run(['report', dir, '--out', page1, '--keep-last', '1']), page1);
    assert.equal(run(['report', root, '--out', page2]), page2);
  });

  after(async () => {
    await (await browser?.catch(() => undefined))?.close();
  });

  it('logs each pruned step durably with its policy and reason', async () => {
    const log = await readRetentionLog(dir);
    assert.deepEqual(
      log.map((e) => [e.step, e.policy]),
      [[4, { keepLast: 2 }]],
    );
    assert.match(log[0]!.why, /older than the last 2/);
    assert.equal(typeof log[0]!.metrics?.val_bpb, 'number');
    assert.deepEqual(
      log[0]!.loss_history?.map(([s]) => s),
      [1, 2, 3, 4],
    );
    assert.ok(!Number.isNaN(Date.parse(log[0]!.time)));
  });

  it('writes a self-contained page: no scripts, nothing loaded from elsewhere', () => {
    const html = readFileSync(page1, 'utf8');
    assert.doesNotMatch(html, /<script/i);
    assert.doesNotMatch(html, /\b(?:src|href)="(?:https?:)?\/\//i);
    assert.match(html, /Content-Security-Policy/);
  });

  it('shows both plots as inline SVG with marks, with scripts off', async () => {
    const page = await openPage(page1);
    assert.equal(await page.locator('script').count(), 0);
    const loss = page.locator('#loss-chart > svg');
    const bpb = page.locator('#bpb-chart > svg');
    assert.equal(await loss.count(), 1);
    assert.equal(await bpb.count(), 1);
    // The loss line (one path per series) and its 12 step points; bpb: the line and 3 checkpoints.
    assert.ok((await loss.locator('g.mark-line path').count()) > 0, 'loss chart has no line');
    assert.equal(await loss.locator('g.mark-symbol path').count(), 12);
    assert.ok((await bpb.locator('g.mark-line path').count()) > 0, 'bpb chart has no line');
    assert.ok((await bpb.locator('g.mark-symbol path').count()) >= 3, 'bpb chart lacks checkpoint points');
    for (const svg of [loss, bpb]) {
      const box = await svg.boundingBox();
      assert.ok(box && box.width > 300 && box.height > 150, `plot too small: ${JSON.stringify(box)}`);
      const text = await svg.textContent();
      assert.match(text ?? '', /step/);
    }
    assert.match((await loss.textContent()) ?? '', /Training loss per step/);
    assert.match((await bpb.textContent()) ?? '', /Validation bpb per checkpoint/);
  });

  it('lists the checkpoints in a table with their state, sizes and the pruned step with its policy', async () => {
    const page = await openPage(page1);
    const rows = page.locator('table.checkpoints tbody tr');
    assert.equal(await rows.count(), 3);
    assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-step'))), [
      '4',
      '8',
      '12',
    ]);
    const pruned = page.locator('tr[data-step="4"]');
    assert.match((await pruned.getAttribute('class')) ?? '', /pruned/);
    assert.match((await pruned.textContent()) ?? '', /keep-last 2/);
    assert.match((await pruned.textContent()) ?? '', /older than the last 2/);
    const newest = (await page.locator('tr[data-step="12"]').textContent()) ?? '';
    for (const state of ['committed', 'verified', 'evaluated', 'best', 'KiB'])
      assert.ok(newest.includes(state), `step 12 lacks ${state}`);
    assert.match(newest, /kept by keep-last, newest, newest-verified/);
    const older = (await page.locator('tr[data-step="8"]').textContent()) ?? '';
    assert.ok(!older.includes('best'));
    assert.match(older, /would be pruned: older than the last 1/);
    assert.match(
      (await page.locator('.summary').textContent()) ?? '',
      /2 committed · 2 verified · 2 evaluated · 1 pruned/,
    );

    const shots = tempDir('ckpt-report-shot-');
    const png = join(shots, 'report.png');
    await page.screenshot({ path: png, fullPage: true });
    assert.ok(statSync(png).size > 20_000, 'screenshot is suspiciously small');
  });

  it('reports every tag of every configured source from a root', async () => {
    const page = await openPage(page2);
    assert.equal(await page.locator('section.target').count(), 1);
    assert.equal((await page.locator('section.target h2').textContent())?.trim(), 'base/d1');
    assert.equal(await page.locator('#loss-chart > svg').count(), 1);
    assert.equal(await page.locator('#bpb-chart > svg').count(), 1);
    assert.equal(await page.locator('table.checkpoints tbody tr').count(), 3);
    // No policy given: the current checkpoints carry no retention reasons.
    assert.doesNotMatch((await page.locator('tr[data-step="12"]').textContent()) ?? '', /kept by/);
  });

  it('refuses a location with nothing to report, and bad flags', () => {
    const empty = ckpt(['report', join(work, 'nothing'), '--out', join(work, 'x.html')]);
    assert.equal(empty.code, 1, empty.stderr);
    assert.match(empty.stderr, /nothing to report/);
    const bad = ckpt(['report', dir, '--keep-last', 'x']);
    assert.equal(bad.code, 2);
    assert.equal(ckpt(['report']).code, 2);
  });
});
