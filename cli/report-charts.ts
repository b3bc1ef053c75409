/**
 * The report's plots: Vega-Lite specs compiled to Vega and rendered to SVG markup in Node (a headless
 * View, no DOM, no canvas), so the page shows them with scripts off and offline.
 */
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export interface LossPoint {
  series: string;
  step: number;
  loss: number;
}

export interface BpbPoint {
  series: string;
  step: number;
  val_bpb: number;
  /** "current" or "pruned". */
  checkpoint: string;
}

const WIDTH = 640;
const HEIGHT = 240;

const CONFIG = {
  font: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif',
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#e6e6e6' },
  legend: { labelFontSize: 11, titleFontSize: 12, orient: 'right' },
  title: { fontSize: 14, anchor: 'start', offset: 10 },
  view: { stroke: '#ccc' },
} as const;

/** Renders a Vega-Lite spec to an SVG string. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function colorBy(multi: boolean) {
  return multi ? { color: { field: 'series', type: 'nominal' as const, title: 'run' } } : {};
}

export function lossSpec(points: LossPoint[]): TopLevelSpec {
  const multi = new Set(points.map((p) => p.series)).size > 1;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Training loss per step',
    description: 'Training loss per step, from the loss_history of the checkpoints meta files',
    width: WIDTH,
    height: HEIGHT,
    config: CONFIG,
    data: { values: points },
    mark: { type: 'line', strokeWidth: 1.5, point: points.length <= 60 ? { size: 18 } : false },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step', axis: { tickMinStep: 1, format: 'd' } },
      y: { field: 'loss', type: 'quantitative', title: 'training loss', scale: { zero: false } },
      ...colorBy(multi),
    },
  };
}

export function bpbSpec(points: BpbPoint[]): TopLevelSpec {
  const multi = new Set(points.map((p) => p.series)).size > 1;
  const x = {
    field: 'step',
    type: 'quantitative' as const,
    title: 'checkpoint step',
    axis: { tickMinStep: 1, format: 'd' },
    scale: { padding: 12 },
  };
  const y = {
    field: 'val_bpb',
    type: 'quantitative' as const,
    title: 'validation bits per byte',
    scale: { zero: false, padding: 12 },
  };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'Validation bpb per checkpoint',
    description:
      'Validation bits per byte of each evaluated checkpoint, from its eval file (pruned ones from the retention log)',
    width: WIDTH,
    height: HEIGHT,
    config: CONFIG,
    data: { values: points },
    layer: [
      { mark: { type: 'line', strokeWidth: 1.5, opacity: 0.6 }, encoding: { x, y, ...colorBy(multi) } },
      {
        mark: { type: 'point', filled: true, size: 70 },
        encoding: {
          x,
          y,
          ...colorBy(multi),
          shape: {
            field: 'checkpoint',
            type: 'nominal',
            title: 'checkpoint',
            scale: { domain: ['current', 'pruned'], range: ['circle', 'cross'] },
          },
        },
      },
    ],
  };
}
