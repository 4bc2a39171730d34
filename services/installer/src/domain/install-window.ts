/*
 * `update.preferred_time` as a window: non-critical automatic installs start only between HH:MM and
 * HH:MM + window, in the installer's time zone. Computed on the local wall clock of that zone, so
 * "03:00" means 03:00 where the server is, not UTC; across a DST change a wait may be an hour off.
 */

export interface WindowDecision {
  inWindow: boolean;
  /** When the next window opens (now, when inside one). */
  nextStart: Date;
}

function localMinutes(now: Date, timeZone: string): { minutes: number; seconds: number } {
  const parts = new Intl.DateTimeFormat('en-GB', {
    timeZone,
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hourCycle: 'h23',
  }).formatToParts(now);
  const get = (type: string) => Number(parts.find((p) => p.type === type)?.value ?? 0);
  return { minutes: get('hour') * 60 + get('minute'), seconds: get('second') };
}

export function installWindow(
  now: Date,
  preferredTime: string,
  timeZone: string,
  windowMinutes: number,
): WindowDecision {
  const [hours, minutes] = preferredTime.split(':').map(Number) as [number, number];
  const start = hours * 60 + minutes;
  const local = localMinutes(now, timeZone);
  const sinceStart = (local.minutes - start + 1440) % 1440;
  if (sinceStart < windowMinutes) return { inWindow: true, nextStart: now };
  const wait = (1440 - sinceStart) * 60 - local.seconds;
  return { inWindow: false, nextStart: new Date(now.getTime() + wait * 1000 - now.getMilliseconds()) };
}

/** True when the zone is one this Node knows (for config validation). */
export function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat('en-GB', { timeZone: name });
    return true;
  } catch {
    return false;
  }
}
