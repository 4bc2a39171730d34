import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Caps the bytes per second of every download sharing it: a token bucket that starts empty and holds at
 * most a quarter second of traffic, so the cap holds from the first byte instead of after a burst.
 */
export class RateLimiter {
  readonly #rate: number;
  readonly #capacity: number;
  #tokens = 0;
  #last = performance.now();

  constructor(bytesPerSecond: number) {
    this.#rate = bytesPerSecond;
    this.#capacity = Math.max(bytesPerSecond / 4, 64 * 1024);
  }

  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const needed = Math.min(bytes, this.#capacity);
    for (;;) {
      const now = performance.now();
      this.#tokens = Math.min(this.#capacity, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
      this.#last = now;
      if (this.#tokens >= needed) {
        // A chunk larger than the bucket may leave it negative: the next take waits for the debt.
        this.#tokens -= bytes;
        return;
      }
      await sleep(Math.ceil(((needed - this.#tokens) / this.#rate) * 1000), undefined, { signal });
    }
  }
}
