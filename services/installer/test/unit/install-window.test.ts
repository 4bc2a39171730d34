import { describe, expect, it } from 'vitest';
import { installWindow, isTimeZone } from '../../src/domain/install-window.ts';

describe('installWindow', () => {
  it('is open from the preferred time for the window length, in the given zone', () => {
    // 03:30 in Berlin (CET, UTC+1) is 02:30 UTC.
    expect(installWindow(new Date('2026-11-27T02:30:00Z'), '03:00', 'Europe/Berlin', 120).inWindow).toBe(
      true,
    );
    expect(installWindow(new Date('2026-11-27T02:30:00Z'), '03:00', 'UTC', 120).inWindow).toBe(false);
    expect(installWindow(new Date('2026-11-27T04:59:59Z'), '03:00', 'UTC', 120).inWindow).toBe(true);
    expect(installWindow(new Date('2026-11-27T05:00:00Z'), '03:00', 'UTC', 120).inWindow).toBe(false);
  });

  it('says when the next window opens, today or tomorrow', () => {
    expect(installWindow(new Date('2026-11-27T01:15:20Z'), '03:00', 'UTC', 60).nextStart.toISOString()).toBe(
      '2026-11-27T03:00:00.000Z',
    );
    expect(installWindow(new Date('2026-11-27T12:00:00Z'), '03:00', 'UTC', 60).nextStart.toISOString()).toBe(
      '2026-11-28T03:00:00.000Z',
    );
    // 03:00 in Berlin is 02:00 UTC in winter.
    expect(
      installWindow(new Date('2026-11-27T12:00:00Z'), '03:00', 'Europe/Berlin', 60).nextStart.toISOString(),
    ).toBe('2026-11-28T02:00:00.000Z');
  });

  it('handles a window that crosses midnight', () => {
    expect(installWindow(new Date('2026-11-27T00:30:00Z'), '23:00', 'UTC', 120).inWindow).toBe(true);
    expect(installWindow(new Date('2026-11-27T01:30:00Z'), '23:00', 'UTC', 120).inWindow).toBe(false);
  });

  it('knows real time zones', () => {
    expect(isTimeZone('Europe/Berlin')).toBe(true);
    expect(isTimeZone('Mars/Olympus')).toBe(false);
  });
});
