import type { CheckRequest, CheckResponse } from '@aico-update/shared';
import type { CheckState, Clock } from '../domain/ports.ts';

/*
 * Requests for a check (update.check.request). A forced (critical) request always runs a fresh check at
 * once. Any other request is answered from a check that finished within `cacheSeconds`, or joins the
 * check already running, so a burst of requests from many frontends costs one check.
 */
export class CheckRequests {
  readonly #run: (request: CheckRequest) => Promise<CheckResponse>;
  readonly #state: CheckState;
  readonly #clock: Clock;
  readonly #cacheMs: number;
  #inFlight: Promise<CheckResponse> | undefined;

  constructor(options: {
    run: (request: CheckRequest) => Promise<CheckResponse>;
    state: CheckState;
    clock: Clock;
    cacheSeconds: number;
  }) {
    this.#run = options.run;
    this.#state = options.state;
    this.#clock = options.clock;
    this.#cacheMs = options.cacheSeconds * 1000;
  }

  async handle(request: CheckRequest): Promise<CheckResponse> {
    const answer = (response: CheckResponse, cached: boolean): CheckResponse => {
      const { request_id: _previous, ...rest } = response;
      return { ...rest, ...(request.request_id ? { request_id: request.request_id } : {}), cached };
    };
    if (request.forced) return answer(await this.#run(request), false);
    const last = await this.#state.lastCheck();
    if (
      last &&
      last.outcome !== 'failed' &&
      this.#clock.now().getTime() - Date.parse(last.checked_at) < this.#cacheMs
    ) {
      return answer(last, true);
    }
    if (!this.#inFlight) {
      this.#inFlight = this.#run(request).finally(() => {
        this.#inFlight = undefined;
      });
    }
    return answer(await this.#inFlight, false);
  }
}
