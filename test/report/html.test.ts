/** The report page's markup and plots from synthetic data: escaping, empty plots, pipeline status, policies. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderCharts } from '../../cli/report-command';
import type { ReportData, ReportTarget } from '../../cli/report-data';
import { describePolicy, escapeHtml, renderReportHtml } from '../../cli/report-html';
import type { PipelineStatus } from '../../cli/pipeline-commands';

const EVIL = `<script>alert("x")</script>&'`;

function target(label: string, extra: Partial<ReportTarget> = {}): ReportTarget {
  return {
    label,
    location: `/tmp/${label}`,
    checkpoints: [
      {
        step: 10,
        committed: true,
        verified: true,
        problems: [],
        evaluated: true,
        valBpb: 2.5,
        best: true,
        leases: [],
        pinned: true,
        bytes: 2048,
        files: 5,
        committedAt: '2026-01-02T03:04:05.678Z',
        loss: 1.25,
      },
      {
        step: 20,
        committed: false,
        problems: [],
        evaluated: false,
        best: false,
        leases: [],
        pinned: false,
        bytes: 10,
        files: 1,
      },
    ],
    pruned: [
      {
        step: 5,
        why: 'older than the last 1',
        policy: { keepLast: 1 },
        time: '2026-01-02T03:04:05.000Z',
        bytes: 4096,
      },
    ],
    loss: [
      { step: 1, loss: 3 },
      { step: 10, loss: 1.25 },
    ],
    bpb: [
      { step: 5, val_bpb: 3, pruned: true },
      { step: 10, val_bpb: 2.5, pruned: false },
    ],
    warnings: [],
    ...extra,
  };
}

function data(targets: ReportTarget[], extra: Partial<ReportData> = {}): ReportData {
  return { location: '/tmp/root', mode: 'root', generatedAt: '2026-01-02T00:00:00.000Z', targets, ...extra };
}

describe('report page', () => {
  it('escapes every piece of text', () => {
    assert.equal(escapeHtml(EVIL), '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;');
    const status = {
      id: EVIL,
      state: 'failed',
      step: 3,
      stepSource: 'unknown',
      workflowStatus: 'FAILED',
      error: EVIL,
    } as PipelineStatus;
    const html = renderReportHtml(
      data([target('d1', { location: EVIL, warnings: [EVIL] })], { location: EVIL }),
      { loss: '<svg class="marks"></svg>' },
      { id: EVIL, status, uiLink: EVIL },
    );
    assert.doesNotMatch(html, /<script/i);
    assert.ok(html.includes(escapeHtml(EVIL)));
  });

  it('shows states, sizes, pruned steps with their policy, and a placeholder for an empty plot', () => {
    const html = renderReportHtml(data([target('base/d1')]), { loss: '<svg class="marks"></svg>' });
    assert.match(html, /<figure id="loss-chart" class="chart"><svg/);
    assert.match(
      html,
      /<figure id="bpb-chart" class="chart"><p class="empty">No checkpoint has been evaluated/,
    );
    assert.match(html, /data-step="5"[\s\S]*pruned 2026-01-02 03:04:05Z by <strong>keep-last 1<\/strong>/);
    assert.match(
      html,
      /data-step="10"[\s\S]*committed[\s\S]*verified[\s\S]*best[\s\S]*pinned[\s\S]*2\.00 KiB/,
    );
    assert.match(html, /data-step="20"[\s\S]*uncommitted/);
    assert.match(
      html,
      /1 committed · 1 verified · 1 evaluated · 1 pruned · 2\.00 KiB on disk · 1 uncommitted · best val_bpb 2\.5000 at step 10/,
    );
    // Rows in step order: pruned 5, then 10, then the uncommitted 20.
    assert.deepEqual(
      [...html.matchAll(/data-step="(\d+)"/g)].map((m) => m[1]),
      ['5', '10', '20'],
    );
  });

  it('shows the pipeline status, or why it is unavailable', () => {
    const status = {
      id: 'p1',
      state: 'running',
      workflowStatus: 'RUNNING',
      step: 7,
      stepSource: 'heartbeat',
      targetSteps: 20,
      loss: 1.5,
      lastCheckpoint: 4,
      bestMetric: { step: 4, value: 2.25 },
      segment: 2,
      pruned: [1, 2],
      retention: { keepLast: 2 },
    } as PipelineStatus;
    const ok = renderReportHtml(data([target('d1')]), {}, { id: 'p1', status });
    assert.match(ok, /<section id="pipeline">/);
    assert.match(ok, /running \(workflow RUNNING\)/);
    assert.match(ok, /7 \/ 20 \(heartbeat\)/);
    assert.match(ok, /2\.2500 at step 4/);
    const down = renderReportHtml(data([target('d1')]), {}, { id: 'p1', error: 'connection refused' });
    assert.match(down, /status unavailable: connection refused/);
    assert.doesNotMatch(renderReportHtml(data([target('d1')]), {}), /id="pipeline"/);
  });

  it('describes policies', () => {
    assert.equal(
      describePolicy({
        keepLast: 2,
        keepBest: { k: 1, metric: 'val_bpb', mode: 'min' },
        keepEvery: 100,
        pinned: [3, 9],
      }),
      'keep-last 2, keep-best 1 by val_bpb (min), keep-every 100, pin 3, 9',
    );
    assert.match(describePolicy({}), /always-kept/);
  });
});

describe('report plots', () => {
  it('renders both plots to SVG with a series per run, escaping labels', async () => {
    const charts = await renderCharts(data([target('base/d1'), target(`sft/${EVIL}`)]));
    for (const svg of [charts.loss!, charts.bpb!]) {
      assert.match(svg, /^<svg[^>]*class="marks"/);
      assert.doesNotMatch(svg, /<script/i);
      assert.match(svg, /base\/d1/); // legend entry
      assert.match(svg, /mark-line/);
      assert.match(svg, /mark-symbol/);
    }
    assert.match(charts.bpb!, /pruned/); // the shape legend
  });

  it('leaves out a plot with nothing to show', async () => {
    const charts = await renderCharts(data([target('d1', { loss: [], bpb: [] })]));
    assert.equal(charts.loss, undefined);
    assert.equal(charts.bpb, undefined);
  });
});
