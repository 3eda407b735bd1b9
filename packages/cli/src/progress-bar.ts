import type { DiskTaskProgress } from '@drkit/core';
import { formatBytes, formatRate, formatSeconds } from './format.js';

/** A one-line progress bar on a terminal (stderr); silent when the stream is not a TTY. */
export class ProgressBar {
  private readonly tasks = new Map<string, DiskTaskProgress>();
  private lastDraw = 0;
  private drawn = false;

  constructor(private readonly stream: NodeJS.WriteStream & { isTTY?: boolean }) {}

  get enabled(): boolean {
    return this.stream.isTTY === true;
  }

  update(progress: DiskTaskProgress): void {
    this.tasks.set(progress.taskId, progress);
    this.draw();
  }

  /** Draws a generic "done / total" line (restore, verify). */
  updateBytes(label: string, done: number, total: number, startedAt: number): void {
    const seconds = (performance.now() - startedAt) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    this.write(`${label} ${bar(done, total)} ${formatBytes(done)}/${formatBytes(total)} ${formatRate(rate)}`);
  }

  private draw(): void {
    let done = 0;
    let total = 0;
    let rate = 0;
    let eta = 0;
    for (const p of this.tasks.values()) {
      done += p.bytesDone;
      total += p.totalBytes;
      rate += p.throughputBytesPerSecond;
      eta = Math.max(eta, p.etaSeconds ?? 0);
    }
    const active = [...this.tasks.values()].filter((p) => p.state !== 'done' && p.state !== 'failed').length;
    this.write(
      `backup ${bar(done, total)} ${formatBytes(done)}/${formatBytes(total)} ${formatRate(rate)} ETA ${formatSeconds(eta)} (${active} disk(s) active)`,
    );
  }

  private write(line: string): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (now - this.lastDraw < 100) return;
    this.lastDraw = now;
    this.stream.write(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  /** Clears the line. */
  finish(): void {
    if (this.enabled && this.drawn) this.stream.write('\r\x1b[2K');
    this.drawn = false;
  }
}

function bar(done: number, total: number): string {
  const width = 24;
  const ratio = total > 0 ? Math.min(1, done / total) : 0;
  const filled = Math.round(ratio * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(ratio * 100).toFixed(0).padStart(3)}%`;
}
