import { describe, expect, it } from 'vitest';
import { Progress, formatDuration } from './progress';
import { renderChart } from './chart';

const fields = (step: number) => ({ step, total: 100, epoch: 1, loss: 1.5, top1: 0.42, imgPerSec: 88.8, lr: 0.004 });

describe('what the user sees', () => {
  it('redraws one bar in place on a terminal and keeps log lines above it', () => {
    let out = '';
    const p = new Progress({ tty: true, logEvery: 10, write: (s) => (out += s) });
    p.update(fields(1));
    p.update(fields(50));
    p.line('eval @ step 50: top-1 40%');
    p.done();
    expect(out).toContain('\r\x1b[2K');
    expect(out).toMatch(/50\/100 ep 1 {2}loss 1\.5000 {2}acc 42\.0% {2}88\.8 img\/s {2}lr 0\.00400 {2}ETA /);
    expect(out).toContain('eval @ step 50: top-1 40%\n');
  });

  it('prints plain lines every --log-every steps when not on a terminal', () => {
    const lines: string[] = [];
    const p = new Progress({ tty: false, logEvery: 10, write: (s) => lines.push(s) });
    for (let s = 1; s <= 25; s++) p.update(fields(s));
    expect(lines.map((l) => l.split(' ')[1])).toEqual(['1/100', '10/100', '20/100']);
    expect(lines.join('')).not.toContain('\x1b');
  });

  it('formats durations for an ETA', () => {
    expect(formatDuration(5)).toBe('5s');
    expect(formatDuration(125)).toBe('2m05s');
    expect(formatDuration(7260)).toBe('2h01m');
    expect(formatDuration(NaN)).toBe('--');
  });

  it('renders a chart of loss and accuracy with epoch marks as standalone SVG', () => {
    const svg = renderChart({
      steps: Array.from({ length: 20 }, (_, i) => ({ step: i + 1, loss: 3 - i * 0.1, top1: i / 20 })),
      evals: [{ step: 10, top1: 0.3, top5: 0.8 }, { step: 20, top1: 0.5, top5: 0.9 }],
      epochSteps: [10, 20],
      title: 'GoogLeNet <test> & co',
    });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg).toContain('GoogLeNet &lt;test&gt; &amp; co');
    expect(svg.match(/<path /g)?.length).toBe(4);
    expect(svg.match(/<circle /g)?.length).toBe(4);
    expect(svg).toContain('stroke-dasharray');
    expect(svg.trim().endsWith('</svg>')).toBe(true);
  });
});
