// Calendar durations as written in the config ("30d", "2w", "1y6m", "12h"): years and months are
// calendar units, so "1m" back from 31 March is 28 or 29 February, not 30 days.

/** A parsed duration; every field is a whole number, at least one is positive. */
export interface Duration {
  years: number;
  months: number;
  days: number;
  hours: number;
}

const UNIT: Record<string, keyof Duration> = { y: 'years', m: 'months', d: 'days', h: 'hours' };

/**
 * Parses a sequence of `<number><unit>` with units y, m (months), w, d, h, largest first, each at
 * most once: "1y6m", "2w", "36h". Returns undefined for anything else.
 */
export function parseDuration(text: string): Duration | undefined {
  const match = /^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?$/.exec(text);
  if (!match || text === '') return undefined;
  // Groups that did not take part are undefined at run time, whatever the typings say.
  const num = (group: number): number => {
    const part: string | undefined = match[group];
    return part === undefined ? 0 : Number(part);
  };
  const duration: Duration = { years: num(1), months: num(2), days: num(3) * 7 + num(4), hours: num(5) };
  return Object.values(duration).some((v) => v > 0) ? duration : undefined;
}

/** The duration as the config writes it, weeks folded into days: "1y6m10d". */
export function formatDuration(duration: Duration): string {
  return (
    Object.entries(UNIT)
      .map(([unit, field]) => (duration[field] > 0 ? `${duration[field]}${unit}` : ''))
      .join('') || '0h'
  );
}
