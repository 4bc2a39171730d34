import type { CheckRequest, CheckResponse } from '@aico-update/shared';
import { describe, expect, it } from 'vitest';
import { CheckRequests } from '../../src/handlers/check-requests.ts';
import { FakeState } from '../support/fakes.ts';

function response(checkedAt: string, id: string): CheckResponse {
  return {
    v: 1,
    check_id: id,
    reason: 'request',
    forced: false,
    channel: 'stable',
    checked_at: checkedAt,
    duration_ms: 1,
    outcome: 'up_to_date',
    components: [],
    cached: false,
  };
}

function setup(nowIso: string) {
  const state = new FakeState();
  const runs: CheckRequest[] = [];
  let release: () => void = () => {};
  const gate = () => new Promise<void>((resolve) => (release = resolve));
  let id = 0;
  let gated = false;
  const requests = new CheckRequests({
    state,
    clock: { now: () => new Date(nowIso) },
    cacheSeconds: 60,
    run: async (request) => {
      runs.push(request);
      if (gated) await gate();
      const r = response(nowIso, `check-${++id}`);
      await state.saveLastCheck(r);
      return r;
    },
  });
  return { requests, state, runs, gateNext: () => (gated = true), release: () => release() };
}

describe('CheckRequests', () => {
  it('answers a request within the cache window from the last check, echoing its request id', async () => {
    const { requests, state, runs } = setup('2026-11-27T10:00:30Z');
    await state.saveLastCheck(response('2026-11-27T10:00:00Z', 'earlier'));
    const answer = await requests.handle({ v: 1, forced: false, request_id: 'r1' });
    expect(answer).toMatchObject({ check_id: 'earlier', request_id: 'r1', cached: true });
    expect(runs).toEqual([]);
  });

  it('runs a fresh check when the last one is older than the window', async () => {
    const { requests, state, runs } = setup('2026-11-27T10:05:00Z');
    await state.saveLastCheck(response('2026-11-27T10:00:00Z', 'earlier'));
    const answer = await requests.handle({ v: 1, forced: false });
    expect(answer).toMatchObject({ check_id: 'check-1', cached: false });
    expect(runs).toHaveLength(1);
  });

  it('always runs a forced (critical) request, whatever the cache holds', async () => {
    const { requests, state, runs } = setup('2026-11-27T10:00:01Z');
    await state.saveLastCheck(response('2026-11-27T10:00:00Z', 'earlier'));
    const answer = await requests.handle({ v: 1, forced: true, request_id: 'urgent' });
    expect(answer).toMatchObject({ check_id: 'check-1', request_id: 'urgent', cached: false });
    expect(runs).toHaveLength(1);
  });

  it('lets a burst of requests share the one check already running', async () => {
    const { requests, runs, gateNext, release } = setup('2026-11-27T10:00:00Z');
    gateNext();
    const answers = Promise.all(
      ['a', 'b', 'c'].map((id) => requests.handle({ v: 1, forced: false, request_id: id })),
    );
    await new Promise((r) => setImmediate(r));
    release();
    const [a, b, c] = await answers;
    expect(runs).toHaveLength(1);
    expect([a?.request_id, b?.request_id, c?.request_id]).toEqual(['a', 'b', 'c']);
    expect(new Set([a?.check_id, b?.check_id, c?.check_id])).toEqual(new Set(['check-1']));
  });

  it('bounds a flood of forced requests: one joins the running check, later ones within 10 s get its result', async () => {
    const { requests, runs, gateNext, release } = setup('2026-11-27T10:00:00Z');
    gateNext();
    const first = requests.handle({ v: 1, forced: true, request_id: 'f1' });
    const joined = requests.handle({ v: 1, forced: true, request_id: 'f2' });
    await new Promise((r) => setImmediate(r));
    release();
    expect(await first).toMatchObject({ check_id: 'check-1', cached: false });
    expect(await joined).toMatchObject({ check_id: 'check-1', request_id: 'f2' });
    const again = await requests.handle({ v: 1, forced: true, request_id: 'f3' });
    expect(again).toMatchObject({ check_id: 'check-1', request_id: 'f3', cached: true });
    expect(runs).toHaveLength(1);
  });
});
