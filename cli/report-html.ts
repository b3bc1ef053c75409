/**
 * The report page: one self-contained HTML document (inline CSS and SVG, no scripts, nothing loaded from
 * elsewhere). Every piece of text from the store or the workflow is escaped.
 */
import type { RetentionLogEntry, RetentionPolicy } from '../checkpoint';
import { humanBytes } from './args';
import type { PipelineStatus } from './pipeline-commands';
import type { ReportCheckpoint, ReportData, ReportTarget } from './report-data';

export interface PipelineSection {
  id: string;
  uiLink?: string;
  status?: PipelineStatus;
  /** Why the status could not be read. */
  error?: string;
}

export interface ReportCharts {
  /** SVG markup, or undefined when there is nothing to plot. */
  loss?: string;
  bpb?: string;
}

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

export function escapeHtml(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

const esc = escapeHtml;

export function describePolicy(policy: RetentionPolicy): string {
  const parts: string[] = [];
  if (policy.keepLast !== undefined) parts.push(`keep-last ${policy.keepLast}`);
  if (policy.keepBest) {
    parts.push(`keep-best ${policy.keepBest.k} by ${policy.keepBest.metric} (${policy.keepBest.mode})`);
  }
  if (policy.keepEvery !== undefined) parts.push(`keep-every ${policy.keepEvery}`);
  if (policy.pinned && policy.pinned.length > 0) parts.push(`pin ${policy.pinned.join(', ')}`);
  return parts.length > 0 ? parts.join(', ') : 'no policy rules (always-kept checkpoints only)';
}

function fmt(n: number | undefined | null, digits = 4): string {
  return typeof n === 'number' && Number.isFinite(n) ? n.toFixed(digits) : '–';
}

/** "2026-01-02T03:04:05.678Z" → "2026-01-02 03:04:05Z"; other text unchanged. */
function shortTime(iso: string | undefined): string {
  if (!iso) return '–';
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?Z$/.exec(iso);
  return m ? `${m[1]} ${m[2]}Z` : iso;
}

function badge(text: string, kind: string, title?: string): string {
  return `<span class="badge ${kind}"${title ? ` title="${esc(title)}"` : ''}>${esc(text)}</span>`;
}

function stateBadges(c: ReportCheckpoint): string {
  const out: string[] = [];
  if (!c.committed)
    return badge('uncommitted', 'bad', 'files without a manifest: an unfinished or crashed save (ckpt gc)');
  out.push(badge('committed', 'ok'));
  out.push(c.verified ? badge('verified', 'ok') : badge('CORRUPT', 'bad', c.problems.join('; ')));
  out.push(c.evaluated ? badge('evaluated', 'ok') : badge('not evaluated', 'muted'));
  if (c.best) out.push(badge('best', 'best', 'lowest val_bpb of the current checkpoints'));
  if (c.leases.length > 0) out.push(badge('leased', 'info', c.leases.join('; ')));
  if (c.pinned) out.push(badge('pinned', 'info'));
  return out.join(' ');
}

function retentionCell(c: ReportCheckpoint, policy: RetentionPolicy | undefined): string {
  if (!policy || !c.committed) return '–';
  if (c.keptBy) return `kept by ${c.keptBy.map((r) => `<code>${esc(r)}</code>`).join(', ')}`;
  return `<span class="warn">would be pruned</span>: ${esc(c.wouldPrune ?? '')}`;
}

function checkpointRow(c: ReportCheckpoint, policy: RetentionPolicy | undefined): string {
  const notes = [
    ...c.problems,
    ...c.leases.map((l) => `lease: ${l}`),
    ...(c.backend ? [`backend ${c.backend}`] : []),
  ];
  return `<tr class="checkpoint ${c.committed ? 'current' : 'uncommitted'}" data-step="${c.step}">
<td class="num">${c.step}</td><td>${stateBadges(c)}</td><td class="num">${fmt(c.valBpb)}</td><td class="num">${fmt(c.loss)}</td>
<td class="num">${esc(humanBytes(c.bytes))}</td><td class="num">${c.files}</td><td class="time">${esc(shortTime(c.committedAt))}</td>
<td>${retentionCell(c, policy)}</td><td class="notes">${notes.map(esc).join('<br>')}</td></tr>`;
}

function prunedRow(e: RetentionLogEntry): string {
  const bpb = e.metrics?.val_bpb;
  const lastLoss = e.loss_history?.[e.loss_history.length - 1]?.[1];
  return `<tr class="checkpoint pruned" data-step="${e.step}">
<td class="num">${e.step}</td><td>${badge('pruned', 'pruned')}</td><td class="num">${fmt(bpb)}</td><td class="num">${fmt(lastLoss)}</td>
<td class="num">${e.bytes !== undefined ? esc(humanBytes(e.bytes)) : '–'}</td><td class="num">0</td><td>–</td>
<td>pruned ${esc(shortTime(e.time))} by <strong>${esc(describePolicy(e.policy))}</strong></td><td class="notes">${esc(e.why)}</td></tr>`;
}

function summary(t: ReportTarget): string {
  const current = t.checkpoints.filter((c) => c.committed);
  const best = current.find((c) => c.best);
  const parts = [
    `${current.length} committed`,
    `${current.filter((c) => c.verified).length} verified`,
    `${current.filter((c) => c.evaluated).length} evaluated`,
    `${t.pruned.length} pruned`,
    `${humanBytes(current.reduce((n, c) => n + c.bytes, 0))} on disk`,
  ];
  const uncommitted = t.checkpoints.length - current.length;
  if (uncommitted > 0) parts.push(`${uncommitted} uncommitted`);
  if (best) parts.push(`best val_bpb ${fmt(best.valBpb)} at step ${best.step}`);
  return parts.map(esc).join(' · ');
}

function targetSection(t: ReportTarget, index: number, policy: RetentionPolicy | undefined): string {
  const rows = [
    ...t.checkpoints.map((c) => ({ step: c.step, html: checkpointRow(c, policy) })),
    ...t.pruned.map((e) => ({ step: e.step, html: prunedRow(e) })),
  ].sort((a, b) => a.step - b.step);
  const warnings =
    t.warnings.length > 0
      ? `<ul class="warnings">${t.warnings.map((w) => `<li>${esc(w)}</li>`).join('')}</ul>`
      : '';
  return `<section class="target" id="target-${index + 1}">
<h2>${esc(t.label)}</h2>
<p class="path"><code>${esc(t.location)}</code></p>
<p class="summary">${summary(t)}</p>
<table class="checkpoints">
<caption>Checkpoints of ${esc(t.label)}${policy ? ` (retention column: what ${esc(describePolicy(policy))} would keep now)` : ''}</caption>
<thead><tr><th scope="col">step</th><th scope="col">state</th><th scope="col">val_bpb</th><th scope="col">loss</th><th scope="col">size</th><th scope="col">files</th><th scope="col">committed at</th><th scope="col">retention</th><th scope="col">notes</th></tr></thead>
<tbody>
${rows.length > 0 ? rows.map((r) => r.html).join('\n') : '<tr><td colspan="9">no checkpoints</td></tr>'}
</tbody>
</table>
${warnings}
</section>`;
}

function pipelineSection(p: PipelineSection): string {
  const head = `<section id="pipeline"><h2>Pipeline <code>${esc(p.id)}</code></h2>`;
  if (!p.status)
    return `${head}<p class="warn">status unavailable: ${esc(p.error ?? 'unknown error')}</p></section>`;
  const s = p.status;
  const best = s.bestMetric ? `${fmt(s.bestMetric.value)} at step ${s.bestMetric.step}` : '–';
  const rows: Array<[string, string]> = [
    ['state', `${s.state} (workflow ${s.workflowStatus})`],
    ['step', `${s.step} / ${s.targetSteps ?? '?'} (${s.stepSource})`],
    ['loss', fmt(s.loss)],
    [
      'last checkpoint',
      s.lastCheckpoint !== undefined && s.lastCheckpoint !== null ? String(s.lastCheckpoint) : '–',
    ],
    ['best metric', best],
    ['segment', s.segment !== undefined ? String(s.segment) : '–'],
    ['runs', s.runs !== undefined ? String(s.runs) : '–'],
    ['retries', s.retries !== undefined ? String(s.retries) : '–'],
    ['evaluations', s.evals ? String(s.evals.length) : '–'],
    ['pruned by the pipeline', s.pruned && s.pruned.length > 0 ? s.pruned.join(', ') : '–'],
    ['retention', s.retention ? describePolicy(s.retention) : '–'],
  ];
  if (s.error) rows.push(['error', s.error]);
  if (p.uiLink) rows.push(['Web UI', p.uiLink]);
  const body = rows.map(([k, v]) => `<tr><th scope="row">${esc(k)}</th><td>${esc(v)}</td></tr>`).join('\n');
  return `${head}<table class="status">${body}</table></section>`;
}

function figure(id: string, caption: string, svg: string | undefined, empty: string): string {
  return `<figure id="${id}" class="chart">${svg ?? `<p class="empty">${esc(empty)}</p>`}<figcaption>${esc(caption)}</figcaption></figure>`;
}

const STYLE = `
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin:28px 0 4px}
.meta,.path,.summary{color:#555;margin:2px 0}code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.95em}
.charts{display:flex;flex-wrap:wrap;gap:16px}figure.chart{margin:0;border:1px solid #ddd;border-radius:6px;padding:8px;background:#fff}
figcaption{color:#666;font-size:.85em;margin-top:4px}.empty{width:640px;color:#777;font-style:italic}
table{border-collapse:collapse;margin-top:8px;font-size:.9em}caption{text-align:left;color:#555;padding-bottom:4px}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 8px;text-align:left;vertical-align:top}thead th{background:#f5f5f5}
td.num,td.time{white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}td.notes{color:#666;font-size:.9em;max-width:360px}
tr.pruned td{color:#888}tr.uncommitted td{background:#fff6f6}
.badge{display:inline-block;border-radius:9px;padding:0 7px;font-size:.8em;margin:1px 0;border:1px solid transparent}
.badge.ok{background:#e7f5ea;color:#1d6b30}.badge.bad{background:#fde8e8;color:#a11}.badge.muted{background:#f0f0f0;color:#666}
.badge.best{background:#fff3c4;color:#7a5a00;border-color:#e8c94a}.badge.info{background:#e6f0fb;color:#1f4f8a}
.badge.pruned{background:#eee;color:#555;text-decoration:line-through}.warn{color:#a15c00}.warnings{color:#a15c00}
`;

export function renderReportHtml(data: ReportData, charts: ReportCharts, pipeline?: PipelineSection): string {
  const title = data.mode === 'dir' ? data.targets[0]!.label : data.location;
  const policy = data.policy
    ? `<p class="meta">retention policy: ${esc(describePolicy(data.policy))}</p>`
    : '';
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Checkpoint report: ${esc(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<header>
<h1>Checkpoint report: ${esc(title)}</h1>
<p class="meta"><code>${esc(data.location)}</code> · ${data.targets.length} checkpoint director${data.targets.length === 1 ? 'y' : 'ies'} · generated ${esc(data.generatedAt)}</p>
${policy}
</header>
${pipeline ? pipelineSection(pipeline) : ''}
<section class="charts" id="charts">
${figure('loss-chart', 'Training loss per step (meta loss_history of every checkpoint, and of pruned ones from the retention log).', charts.loss, 'No loss history recorded in these checkpoints.')}
${figure('bpb-chart', 'Validation bits per byte per checkpoint (eval files; crosses are pruned checkpoints).', charts.bpb, 'No checkpoint has been evaluated yet (ckpt eval DIR --step N).')}
</section>
${data.targets.map((t, i) => targetSection(t, i, data.policy)).join('\n')}
</body>
</html>
`;
}
