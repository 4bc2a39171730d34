import type { DownloadProgress } from '@aico-update/shared';

/**
 * Progress of one release: bytes done against the signed total, a rate over a sliding window, and an
 * ETA. `due()` limits events to one per interval (plus the final one), so a fast download does not
 * flood the bus.
 */
export class ProgressTracker {
  readonly #component: DownloadProgress['component'];
  readonly #version: string;
  readonly #total: number;
  readonly #intervalMs: number;
  readonly #now: () => number;
  #done = 0;
  #lastEmit = Number.NEGATIVE_INFINITY;
  readonly #window: { at: number; done: number }[] = [];

  constructor(options: {
    component: DownloadProgress['component'];
    version: string;
    totalBytes: number;
    intervalMs: number;
    now: () => number;
  }) {
    this.#component = options.component;
    this.#version = options.version;
    this.#total = options.totalBytes;
    this.#intervalMs = options.intervalMs;
    this.#now = options.now;
    this.#window.push({ at: this.#now(), done: 0 });
  }

  add(bytes: number): void {
    this.#done += bytes;
  }

  /** True when an event should go out now (and marks it as sent). */
  due(): boolean {
    const now = this.#now();
    if (now - this.#lastEmit < this.#intervalMs) return false;
    this.#lastEmit = now;
    return true;
  }

  snapshot(status: DownloadProgress['status'] = 'in_progress', message?: string): DownloadProgress {
    const now = this.#now();
    this.#window.push({ at: now, done: this.#done });
    while (this.#window.length > 2 && now - (this.#window[0]?.at ?? now) > 5000) this.#window.shift();
    const first = this.#window[0] ?? { at: now, done: 0 };
    const seconds = (now - first.at) / 1000;
    const rate = seconds > 0 ? (this.#done - first.done) / seconds : 0;
    const left = Math.max(this.#total - this.#done, 0);
    const done = Math.min(this.#done, this.#total);
    return {
      v: 1,
      component: this.#component,
      version: this.#version,
      status,
      bytes_done: done,
      total_bytes: this.#total,
      percent: this.#total === 0 ? 100 : Math.round((done / this.#total) * 1000) / 10,
      rate_bytes_per_second: Math.round(rate),
      eta_seconds: status === 'completed' ? 0 : rate > 0 ? Math.ceil(left / rate) : null,
      ...(message ? { message } : {}),
    };
  }
}
