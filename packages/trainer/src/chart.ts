/** An SVG chart of a run: training loss per step (left), accuracy per step and per evaluation (right). */
export interface ChartData {
  steps: { step: number; loss: number; top1: number }[];
  evals: { step: number; top1: number; top5: number }[];
  epochSteps: number[];
  title: string;
}

const W = 460, H = 300, PAD = { l: 52, r: 14, t: 34, b: 40 };

export function renderChart(d: ChartData): string {
  const maxStep = Math.max(1, ...d.steps.map((s) => s.step), ...d.evals.map((e) => e.step));
  const losses = d.steps.map((s) => s.loss).filter(Number.isFinite);
  const maxLoss = Math.max(1e-6, ...losses) * 1.05;
  const smooth = ema(d.steps.map((s) => s.top1), 0.9);
  const left = panel(0, 'training loss', maxLoss, maxStep, d.epochSteps, [
    { points: d.steps.map((s) => [s.step, s.loss] as const), color: '#1f77b4', label: 'loss (all heads)' },
  ]);
  const right = panel(W, 'accuracy', 1, maxStep, d.epochSteps, [
    { points: d.steps.map((s, i) => [s.step, smooth[i]!] as const), color: '#ff7f0e', label: 'train top-1 (EMA)' },
    { points: d.evals.map((e) => [e.step, e.top1] as const), color: '#2ca02c', label: 'eval top-1', dots: true },
    { points: d.evals.map((e) => [e.step, e.top5] as const), color: '#9467bd', label: 'eval top-5', dots: true },
  ], true);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H + 24}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="${W}" y="16" text-anchor="middle" font-size="13">${escapeXml(d.title)}</text>
<g transform="translate(0,20)">${left}${right}</g>
</svg>
`;
}

interface Series { points: (readonly [number, number])[]; color: string; label: string; dots?: boolean }

function panel(x0: number, title: string, maxY: number, maxX: number, epochSteps: number[], series: Series[], percent = false): string {
  const pw = W - PAD.l - PAD.r, ph = H - PAD.t - PAD.b;
  const sx = (x: number) => x0 + PAD.l + (x / maxX) * pw;
  const sy = (y: number) => PAD.t + ph - (Math.min(maxY, Math.max(0, y)) / maxY) * ph;
  const out: string[] = [];
  out.push(`<text x="${x0 + W / 2}" y="${PAD.t - 12}" text-anchor="middle">${title}</text>`);
  for (let i = 0; i <= 4; i++) {
    const v = (maxY * i) / 4;
    out.push(`<line x1="${sx(0)}" x2="${sx(maxX)}" y1="${sy(v)}" y2="${sy(v)}" stroke="#eee"/>`);
    out.push(`<text x="${sx(0) - 4}" y="${sy(v) + 4}" text-anchor="end">${percent ? `${Math.round(v * 100)}%` : v.toPrecision(3)}</text>`);
  }
  for (const e of epochSteps) out.push(`<line x1="${sx(e)}" x2="${sx(e)}" y1="${sy(0)}" y2="${sy(maxY)}" stroke="#ccc" stroke-dasharray="3,3"/>`);
  out.push(`<line x1="${sx(0)}" x2="${sx(maxX)}" y1="${sy(0)}" y2="${sy(0)}" stroke="#333"/>`);
  out.push(`<text x="${sx(maxX / 2)}" y="${H - 8}" text-anchor="middle">step (dashed: epoch ends)</text>`);
  out.push(`<text x="${sx(maxX)}" y="${sy(0) + 14}" text-anchor="end">${maxX}</text>`);
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const path = s.points.map(([x, y], j) => `${j ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    out.push(`<path d="${path}" fill="none" stroke="${s.color}" stroke-width="1.5"/>`);
    if (s.dots) for (const [x, y] of s.points) out.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${s.color}"/>`);
    out.push(`<rect x="${sx(0) + 8}" y="${PAD.t + 4 + i * 14}" width="10" height="3" fill="${s.color}"/>`);
    out.push(`<text x="${sx(0) + 22}" y="${PAD.t + 9 + i * 14}">${s.label}</text>`);
  });
  return out.join('\n');
}

function ema(values: number[], beta: number): number[] {
  let m = 0;
  return values.map((v, i) => {
    m = beta * m + (1 - beta) * v;
    return m / (1 - Math.pow(beta, i + 1));
  });
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}
