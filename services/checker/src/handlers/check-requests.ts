import type { CheckRequest, CheckResponse } from '@aico-update/shared';
import type { CheckState, Clock } from '../domain/ports.ts';

/*
 * Requests for a check (update.check.request). A forced (critical) request runs a fresh check at once,
 * but a flood of them is bounded: one joins a check already running, and within `forcedMinIntervalSeconds`
 * of the last forced check it gets that check's result. Any other request is answered from a check that
 * finished within `cacheSeconds`, or joins the check already running, so a burst of requests from many
 * frontends costs one check.
 */
export class CheckRequests {
  readonly #run: (request: CheckRequest) => Promise<CheckResponse>;
  readonly #state: CheckState;
  readonly #clock: Clock;
  readonly #cacheMs: number;
  readonly #forcedMinMs: number;
  #inFlight: Promise<CheckResponse> | undefined;
  #lastForced: { at: number; response: Promise<CheckResponse> } | undefined;

  constructor(options: {
    run: (request: CheckRequest) => Promise<CheckResponse>;
    state: CheckState;
    clock: Clock;
    cacheSeconds: number;
    /** Forced checks at most this often; more join the last one (default 10 s). */
    forcedMinIntervalSeconds?: number;
  }) {
    this.#run = options.run;
    this.#state = options.state;
    this.#clock = options.clock;
    this.#cacheMs = options.cacheSeconds * 1000;
    this.#forcedMinMs = (options.forcedMinIntervalSeconds ?? 10) * 1000;
  }

  async handle(request: CheckRequest): Promise<CheckResponse> {
    const answer = (response: CheckResponse, cached: boolean): CheckResponse => {
      const { request_id: _previous, ...rest } = response;
      return { ...rest, ...(request.request_id ? { request_id: request.request_id } : {}), cached };
    };
    if (request.forced) {
      const now = this.#clock.now().getTime();
      if (this.#inFlight) return answer(await this.#inFlight, false);
      if (this.#lastForced && now - this.#lastForced.at < this.#forcedMinMs) {
        return answer(await this.#lastForced.response, true);
      }
      const response = this.#start(request);
      this.#lastForced = { at: now, response };
      return answer(await response, false);
    }
    const last = await this.#state.lastCheck();
    if (
      last &&
      last.outcome !== 'failed' &&
      this.#clock.now().getTime() - Date.parse(last.checked_at) < this.#cacheMs
    ) {
      return answer(last, true);
    }
    return answer(await (this.#inFlight ?? this.#start(request)), false);
  }

  /** A fresh check now, outside the bounds (the service's own callers: tests, the demo, an operator's CLI). */
  async fresh(request: CheckRequest): Promise<CheckResponse> {
    const { request_id: _previous, ...rest } = await this.#run(request);
    return { ...rest, ...(request.request_id ? { request_id: request.request_id } : {}), cached: false };
  }

  #start(request: CheckRequest): Promise<CheckResponse> {
    const running = this.#run(request).finally(() => {
      this.#inFlight = undefined;
    });
    this.#inFlight = running;
    return running;
  }
}
