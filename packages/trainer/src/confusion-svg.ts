/**
 * An SVG confusion matrix: rows are true classes, columns predicted ones, each cell shaded by its share of
 * the row (so a class's recall is its diagonal cell) and labelled with its count where cells are big enough.
 */
export interface ConfusionChart {
  /** confusion[true][predicted] counts, square. */
  confusion: number[][];
  /** Names by class index; missing ones are shown as the index. */
  classNames: string[];
  title: string;
}

const MAX_GRID = 720;
const LABELED_UP_TO = 40; // classes; beyond this the cells are too small for names and counts

export function renderConfusion(d: ConfusionChart): string {
  const n = d.confusion.length;
  const cell = Math.max(1, Math.min(48, Math.floor(MAX_GRID / Math.max(1, n))));
  const labeled = n <= LABELED_UP_TO;
  const name = (i: number) => escapeXml(d.classNames[i] ?? String(i));
  const margin = labeled ? 12 + 6.5 * Math.max(1, ...Array.from({ length: n }, (_, i) => name(i).length)) : 20;
  const x0 = margin + 20, y0 = margin + 40;
  const width = x0 + n * cell + 20, height = y0 + n * cell + 30;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${Math.ceil(width)}" height="${Math.ceil(height)}" font-family="sans-serif" font-size="11">`);
  out.push('<rect width="100%" height="100%" fill="white"/>');
  out.push(`<text x="${width / 2}" y="16" text-anchor="middle" font-size="13">${escapeXml(d.title)}</text>`);
  out.push(`<text x="${x0 + (n * cell) / 2}" y="${height - 8}" text-anchor="middle">predicted class</text>`);
  out.push(`<text transform="translate(12,${y0 + (n * cell) / 2}) rotate(-90)" text-anchor="middle">true class</text>`);
  for (let t = 0; t < n; t++) {
    const row = d.confusion[t]!;
    const total = row.reduce((a, b) => a + b, 0);
    for (let p = 0; p < n; p++) {
      const count = row[p]!;
      const share = total > 0 ? count / total : 0;
      const shade = Math.round(255 * (1 - share));
      const fill = t === p ? `rgb(${shade},${Math.round(255 - 0.45 * (255 - shade))},${shade})` : `rgb(255,${shade},${shade})`;
      out.push(`<rect x="${x0 + p * cell}" y="${y0 + t * cell}" width="${cell}" height="${cell}" fill="${fill}"><title>${name(t)} → ${name(p)}: ${count}</title></rect>`);
      if (labeled && cell >= 24 && count > 0) {
        out.push(`<text x="${x0 + p * cell + cell / 2}" y="${y0 + t * cell + cell / 2 + 4}" text-anchor="middle" fill="${share > 0.5 ? 'white' : 'black'}">${count}</text>`);
      }
    }
    if (labeled) out.push(`<text x="${x0 - 4}" y="${y0 + t * cell + cell / 2 + 4}" text-anchor="end">${name(t)}</text>`);
  }
  if (labeled) {
    for (let p = 0; p < n; p++) {
      const cx = x0 + p * cell + cell / 2;
      out.push(`<text transform="translate(${cx + 4},${y0 - 4}) rotate(-60)">${name(p)}</text>`);
    }
  }
  out.push(`<rect x="${x0}" y="${y0}" width="${n * cell}" height="${n * cell}" fill="none" stroke="#333"/>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function escapeXml(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}
