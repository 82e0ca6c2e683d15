/** What the user watches: a redrawn bar on a terminal, plain log lines otherwise (CI, files, pipes). */
export interface ProgressFields {
  step: number;
  total: number;
  epoch: number;
  loss: number;
  top1: number;
  imgPerSec: number;
  lr: number;
}

export class Progress {
  private readonly started = performance.now();
  private drawn = false;

  constructor(
    private readonly opts: { tty: boolean; logEvery: number; write: (s: string) => void },
  ) {}

  update(f: ProgressFields): void {
    const elapsed = (performance.now() - this.started) / 1000;
    const eta = f.step > 0 ? (elapsed / f.step) * (f.total - f.step) : 0;
    const figures = `loss ${f.loss.toFixed(4)}  acc ${(f.top1 * 100).toFixed(1)}%  ${f.imgPerSec.toFixed(1)} img/s  lr ${f.lr.toPrecision(3)}`;
    if (this.opts.tty) {
      const width = 24;
      const filled = Math.round((width * f.step) / f.total);
      const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
      this.opts.write(`\r\x1b[2K${bar} ${f.step}/${f.total} ep ${f.epoch}  ${figures}  ETA ${formatDuration(eta)}`);
      this.drawn = true;
    } else if (f.step % this.opts.logEvery === 0 || f.step === f.total || f.step === 1) {
      this.opts.write(`step ${f.step}/${f.total} epoch ${f.epoch}  ${figures}  eta ${formatDuration(eta)}\n`);
    }
  }

  /** A line that must not be drawn over by the bar. */
  line(text: string): void {
    if (this.drawn) this.opts.write('\r\x1b[2K');
    this.opts.write(text + '\n');
    this.drawn = false;
  }

  done(): void {
    if (this.drawn) this.opts.write('\n');
    this.drawn = false;
  }
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '--';
  const s = Math.round(sec);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
