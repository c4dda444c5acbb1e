// The forget decision: each keep rule, combinations, calendar buckets in a timezone (DST, ISO weeks), safety.
import { describe, expect, it } from 'vitest';
import { type Duration, parseDuration } from '../../src/duration.js';
import { BackupError } from '../../src/errors.js';
import {
  applyRetention,
  describePolicy,
  policyFromConfig,
  type RetentionPolicy,
} from '../../src/repository/retention.js';

interface Snap {
  id: string;
  startedAt: string;
  status: 'success' | 'partial';
}

/** A snapshot whose id is its startedAt, so kept ids read as times. */
function snap(startedAt: string, status: Snap['status'] = 'success'): Snap {
  return { id: startedAt, startedAt, status };
}

/** One snapshot a day at `time` (UTC unless it carries an offset), oldest first. */
function daily(first: string, count: number, time = 'T12:00:00Z'): Snap[] {
  const start = Date.parse(`${first}T00:00:00Z`);
  return Array.from({ length: count }, (_, i) =>
    snap(new Date(start + i * 86_400_000).toISOString().slice(0, 10) + time),
  );
}

function within(text: string): Duration {
  const duration = parseDuration(text);
  if (!duration) throw new Error(`bad duration ${text}`);
  return duration;
}

interface Case {
  name: string;
  snapshots: Snap[];
  policy: RetentionPolicy;
  keep: string[];
  now?: string;
  timezone?: string;
}

function decide(c: Pick<Case, 'snapshots' | 'policy' | 'now' | 'timezone'>) {
  return applyRetention(c.snapshots, c.policy, {
    now: new Date(c.now ?? '2027-06-01T00:00:00Z'),
    timezone: c.timezone ?? 'UTC',
  });
}

// 00:30 and 23:45 local each day; Berlin moves to +02:00 at 02:00 on 29 March and back at 03:00 on 25 October.
const berlinSpring = [
  '2026-03-27T00:30:00+01:00',
  '2026-03-27T23:45:00+01:00',
  '2026-03-28T00:30:00+01:00',
  '2026-03-28T23:45:00+01:00',
  '2026-03-29T00:30:00+01:00',
  '2026-03-29T23:45:00+02:00',
  '2026-03-30T00:30:00+02:00',
  '2026-03-30T23:45:00+02:00',
].map((t) => snap(t));
const berlinAutumn = [
  '2026-10-23T00:30:00+02:00',
  '2026-10-23T23:45:00+02:00',
  '2026-10-24T00:30:00+02:00',
  '2026-10-24T23:45:00+02:00',
  '2026-10-25T00:30:00+02:00',
  '2026-10-25T23:45:00+01:00',
  '2026-10-26T00:30:00+01:00',
  '2026-10-26T23:45:00+01:00',
].map((t) => snap(t));

/** Oldest first, as Repository.scan returns them. */
function byTime(snapshots: Snap[]): Snap[] {
  return [...snapshots].sort((a, b) => Date.parse(a.startedAt) - Date.parse(b.startedAt));
}

const cases: Case[] = [
  {
    name: 'keepLast keeps the N newest',
    snapshots: daily('2026-11-01', 5),
    policy: { keepLast: 2 },
    keep: ['2026-11-04T12:00:00Z', '2026-11-05T12:00:00Z'],
  },
  {
    name: 'keepLast larger than the list keeps all',
    snapshots: daily('2026-11-01', 3),
    policy: { keepLast: 10 },
    keep: daily('2026-11-01', 3).map((s) => s.id),
  },
  {
    name: 'keepHourly keeps the newest of each of the N latest hours',
    snapshots: ['10:00', '10:20', '10:40', '11:00', '11:40', '12:00', '12:20'].map((t) =>
      snap(`2026-11-24T${t}:00Z`),
    ),
    policy: { keepHourly: 3 },
    keep: ['2026-11-24T10:40:00Z', '2026-11-24T11:40:00Z', '2026-11-24T12:20:00Z'],
  },
  {
    name: 'keepDaily keeps the newest of each day',
    snapshots: byTime([...daily('2026-11-01', 3, 'T03:00:00Z'), ...daily('2026-11-01', 3, 'T15:00:00Z')]),
    policy: { keepDaily: 2 },
    keep: ['2026-11-02T15:00:00Z', '2026-11-03T15:00:00Z'],
  },
  {
    name: 'keepDaily counts only days that have snapshots',
    snapshots: ['01', '02', '05', '09'].map((d) => snap(`2026-11-${d}T12:00:00Z`)),
    policy: { keepDaily: 3 },
    keep: ['2026-11-02T12:00:00Z', '2026-11-05T12:00:00Z', '2026-11-09T12:00:00Z'],
  },
  {
    name: 'keepWeekly keeps the newest of each ISO week (Monday to Sunday)',
    snapshots: daily('2026-11-02', 17), // Monday 2 .. Wednesday 18 November
    policy: { keepWeekly: 2 },
    keep: ['2026-11-15T12:00:00Z', '2026-11-18T12:00:00Z'],
  },
  {
    name: 'keepWeekly across the year boundary: 2026-12-28 .. 2027-01-03 is 2026-W53',
    snapshots: daily('2026-12-24', 14),
    policy: { keepWeekly: 3 },
    keep: ['2026-12-27T12:00:00Z', '2027-01-03T12:00:00Z', '2027-01-06T12:00:00Z'],
  },
  {
    name: 'keepMonthly keeps the last day of months of different lengths',
    snapshots: daily('2028-01-15', 80, 'T23:00:00Z'), // to 3 April 2028, a leap year
    policy: { keepMonthly: 4 },
    keep: ['2028-01-31T23:00:00Z', '2028-02-29T23:00:00Z', '2028-03-31T23:00:00Z', '2028-04-03T23:00:00Z'],
  },
  {
    name: 'keepYearly keeps the newest of each year',
    snapshots: ['2024-06-01', '2024-12-31', '2025-03-01', '2025-11-30', '2026-02-01'].map((d) =>
      snap(`${d}T12:00:00Z`),
    ),
    policy: { keepYearly: 2 },
    keep: ['2025-11-30T12:00:00Z', '2026-02-01T12:00:00Z'],
  },
  {
    name: 'keepWithin 7d keeps from now − 7 days on, boundary included',
    snapshots: ['05-24T23:59:59Z', '05-25T00:00:00Z', '05-31T12:00:00Z'].map((t) => snap(`2027-${t}`)),
    policy: { keepWithin: within('7d') },
    keep: ['2027-05-25T00:00:00Z', '2027-05-31T12:00:00Z'],
  },
  {
    name: 'keepWithin 1m from 31 March clamps to 28 February',
    snapshots: ['02-27T12:00:00Z', '02-28T11:59:00Z', '02-28T12:00:00Z', '03-01T00:00:00Z'].map((t) =>
      snap(`2026-${t}`),
    ),
    policy: { keepWithin: within('1m') },
    now: '2026-03-31T12:00:00Z',
    keep: ['2026-02-28T12:00:00Z', '2026-03-01T00:00:00Z'],
  },
  {
    name: 'keepWithin 1m from 31 March of a leap year clamps to 29 February',
    snapshots: ['02-28T12:00:00Z', '02-29T11:00:00Z', '02-29T12:00:00Z'].map((t) => snap(`2028-${t}`)),
    policy: { keepWithin: within('1m') },
    now: '2028-03-31T12:00:00Z',
    keep: ['2028-02-29T12:00:00Z'],
  },
  {
    name: 'keepWithin 1y from 29 February clamps to 28 February',
    snapshots: ['2027-02-27T12:00:00Z', '2027-02-28T12:00:00Z', '2027-03-01T12:00:00Z'].map((t) => snap(t)),
    policy: { keepWithin: within('1y') },
    now: '2028-02-29T12:00:00Z',
    keep: ['2027-02-28T12:00:00Z', '2027-03-01T12:00:00Z'],
  },
  {
    name: 'keepWithin 1d across the spring DST change in Berlin is 23 real hours',
    snapshots: ['2026-03-28T10:30:00Z', '2026-03-28T11:00:00Z'].map((t) => snap(t)),
    policy: { keepWithin: within('1d') },
    now: '2026-03-29T12:00:00+02:00',
    timezone: 'Europe/Berlin',
    keep: ['2026-03-28T11:00:00Z'],
  },
  {
    name: 'keepWithin hours are elapsed hours across the DST change',
    snapshots: ['2026-03-28T21:59:00Z', '2026-03-28T22:00:00Z'].map((t) => snap(t)),
    policy: { keepWithin: within('12h') },
    now: '2026-03-29T12:00:00+02:00',
    timezone: 'Europe/Berlin',
    keep: ['2026-03-28T22:00:00Z'],
  },
  {
    name: 'keepWithin keeps snapshots in the future (clock skew)',
    snapshots: [
      snap('2027-05-30T12:00:00Z'),
      snap('2027-05-31T12:00:00Z'),
      snap('2027-06-01T00:05:00Z', 'partial'),
    ],
    policy: { keepWithin: within('1d') },
    keep: ['2027-05-31T12:00:00Z', '2027-06-01T00:05:00Z'],
  },
  {
    // Date arithmetic past ±273,790 years gives NaN, which no time is at or after.
    name: 'keepWithin longer than dates reach keeps everything',
    snapshots: daily('2027-05-20', 3),
    policy: { keepWithin: within('300000y') },
    keep: ['2027-05-20T12:00:00Z', '2027-05-21T12:00:00Z', '2027-05-22T12:00:00Z'],
  },
  {
    name: 'keepWithin of more days than dates reach keeps everything',
    snapshots: daily('2027-05-20', 2),
    policy: { keepWithin: within('200000000d') },
    keep: ['2027-05-20T12:00:00Z', '2027-05-21T12:00:00Z'],
  },
  {
    name: 'daily buckets are local days in Europe/Berlin around the spring DST change',
    snapshots: berlinSpring,
    policy: { keepDaily: 4 },
    timezone: 'Europe/Berlin',
    keep: berlinSpring.filter((s) => s.id.includes('23:45')).map((s) => s.id),
  },
  {
    name: 'daily buckets are local days in Europe/Berlin around the autumn DST change',
    snapshots: berlinAutumn,
    policy: { keepDaily: 3 },
    timezone: 'Europe/Berlin',
    keep: berlinAutumn
      .filter((s) => s.id.includes('23:45'))
      .slice(1)
      .map((s) => s.id),
  },
  {
    name: 'the same snapshots bucketed in UTC keep the 00:30 ones instead',
    snapshots: berlinSpring,
    policy: { keepDaily: 3 },
    keep: ['2026-03-29T00:30:00+01:00', '2026-03-30T00:30:00+02:00', '2026-03-30T23:45:00+02:00'],
  },
  {
    name: 'hourly buckets skip the missing 02:xx hour of the spring change in Berlin',
    snapshots: ['00:00', '00:30', '01:00', '01:30', '02:00', '02:30'].map((t) => snap(`2026-03-29T${t}:00Z`)),
    policy: { keepHourly: 3 },
    timezone: 'Europe/Berlin',
    keep: ['2026-03-29T00:30:00Z', '2026-03-29T01:30:00Z', '2026-03-29T02:30:00Z'],
  },
  {
    name: 'hourly buckets merge the repeated 02:xx hour of the autumn change in Berlin',
    snapshots: ['23:30', '00:00', '00:30', '01:00', '01:30', '02:00'].map((t) =>
      snap(`2026-10-${t.startsWith('23') ? '24' : '25'}T${t}:00Z`),
    ),
    policy: { keepHourly: 3 },
    timezone: 'Europe/Berlin',
    keep: ['2026-10-24T23:30:00Z', '2026-10-25T01:30:00Z', '2026-10-25T02:00:00Z'],
  },
  {
    name: 'daily buckets in America/Los_Angeles where the UTC date differs (23:30 local)',
    snapshots: ['2026-11-24T08:00:00-08:00', '2026-11-24T23:30:00-08:00', '2026-11-25T12:00:00-08:00'].map(
      (t) => snap(t),
    ),
    policy: { keepDaily: 2 },
    timezone: 'America/Los_Angeles',
    keep: ['2026-11-24T23:30:00-08:00', '2026-11-25T12:00:00-08:00'],
  },
  {
    name: 'monthly buckets are local months (00:30 on 1 June in Berlin is 31 May in UTC)',
    snapshots: ['2026-05-31T12:00:00Z', '2026-05-31T22:30:00Z', '2026-06-15T12:00:00Z'].map((t) => snap(t)),
    policy: { keepMonthly: 2 },
    timezone: 'Europe/Berlin',
    keep: ['2026-05-31T12:00:00Z', '2026-06-15T12:00:00Z'],
  },
  {
    name: 'rules combine with "or": keepLast 2 + keepDaily 3',
    snapshots: byTime([...daily('2026-11-01', 4, 'T03:00:00Z'), ...daily('2026-11-01', 4, 'T15:00:00Z')]),
    policy: { keepLast: 2, keepDaily: 3 },
    keep: ['2026-11-02T15:00:00Z', '2026-11-03T15:00:00Z', '2026-11-04T03:00:00Z', '2026-11-04T15:00:00Z'],
  },
  {
    name: 'keepDaily 3 + keepWeekly 2 + keepMonthly 3',
    snapshots: daily('2026-09-20', 66), // to Tuesday 24 November
    policy: { keepDaily: 3, keepWeekly: 2, keepMonthly: 3 },
    keep: [
      '2026-09-30T12:00:00Z',
      '2026-10-31T12:00:00Z',
      '2026-11-22T12:00:00Z',
      '2026-11-23T12:00:00Z',
      '2026-11-24T12:00:00Z',
    ],
  },
  {
    name: 'partial snapshots count like any other',
    snapshots: [
      snap('2026-11-01T03:00:00Z'),
      snap('2026-11-01T15:00:00Z', 'partial'),
      snap('2026-11-02T03:00:00Z'),
    ],
    policy: { keepDaily: 2 },
    keep: ['2026-11-01T15:00:00Z', '2026-11-02T03:00:00Z'],
  },
  {
    name: 'the newest success is kept even when only keepWithin would drop it',
    snapshots: daily('2027-01-01', 3),
    policy: { keepWithin: within('7d') },
    keep: ['2027-01-03T12:00:00Z'],
  },
  {
    name: 'a newest partial with an older success: the success is still kept',
    snapshots: [
      snap('2026-11-01T12:00:00Z'),
      snap('2026-11-02T12:00:00Z'),
      snap('2026-11-03T12:00:00Z', 'partial'),
    ],
    policy: { keepLast: 1 },
    keep: ['2026-11-02T12:00:00Z', '2026-11-03T12:00:00Z'],
  },
  {
    name: 'only partial snapshots, all out of keepWithin: the newest is kept',
    snapshots: [snap('2027-01-01T12:00:00Z', 'partial'), snap('2027-01-02T12:00:00Z', 'partial')],
    policy: { keepWithin: within('1d') },
    keep: ['2027-01-02T12:00:00Z'],
  },
  {
    name: 'equal startedAt: the higher id counts as newer',
    snapshots: [
      { id: 'b', startedAt: '2026-11-01T12:00:00Z', status: 'success' },
      { id: 'a', startedAt: '2026-11-01T12:00:00Z', status: 'success' },
    ],
    policy: { keepLast: 1 },
    keep: ['b'],
  },
];

describe('applyRetention', () => {
  it.each(cases)('$name', (c) => {
    const decision = decide(c);
    expect(decision.keep.map((s) => s.id)).toEqual(c.keep);
    expect(decision.drop.map((s) => s.id)).toEqual(
      c.snapshots.map((s) => s.id).filter((id) => !c.keep.includes(id)),
    );
    expect([...decision.reasons.keys()].sort()).toEqual(c.snapshots.map((s) => s.id).sort());
  });

  it.each([
    ['2026-12-28', '2026-W53'],
    ['2027-01-01', '2026-W53'],
    ['2027-01-03', '2026-W53'],
    ['2027-01-04', '2027-W01'],
    ['2025-12-29', '2026-W01'],
    ['2021-01-03', '2020-W53'],
  ])('%s is in ISO week %s', (date, week) => {
    const decision = decide({ snapshots: [snap(`${date}T12:00:00Z`)], policy: { keepWeekly: 1 } });
    expect(decision.reasons.get(`${date}T12:00:00Z`)).toEqual([`weekly ${week}`]);
  });

  it('lists every reason of a kept snapshot and why the others are dropped', () => {
    const snapshots = [
      snap('2026-10-31T12:00:00Z'),
      snap('2026-11-23T12:00:00Z', 'partial'),
      snap('2026-11-24T03:00:00Z'),
      snap('2026-11-24T13:30:00Z', 'partial'),
      snap('2026-11-24T13:45:00Z'),
    ];
    const policy: RetentionPolicy = {
      keepLast: 1,
      keepHourly: 1,
      keepDaily: 1,
      keepWeekly: 1,
      keepMonthly: 2,
      keepYearly: 1,
      keepWithin: within('30d'),
    };
    const decision = decide({ snapshots, policy, now: '2026-11-25T00:00:00Z' });
    expect(Object.fromEntries(decision.reasons)).toEqual({
      '2026-10-31T12:00:00Z': ['monthly 2026-10', 'within 30d'],
      '2026-11-23T12:00:00Z': ['within 30d'],
      '2026-11-24T03:00:00Z': ['within 30d'],
      '2026-11-24T13:30:00Z': ['within 30d'],
      '2026-11-24T13:45:00Z': [
        'last 1',
        'hourly 2026-11-24T13',
        'daily 2026-11-24',
        'weekly 2026-W48',
        'monthly 2026-11',
        'yearly 2026',
        'within 30d',
      ],
    });
    const dropped = decide({ snapshots, policy: { keepLast: 1 } }).reasons;
    expect(dropped.get('2026-11-24T13:30:00Z')).toEqual([
      'matches no keep rule',
      'partial: a newer success exists',
    ]);
    expect(dropped.get('2026-11-23T12:00:00Z')).toEqual([
      'matches no keep rule',
      'partial: a newer success exists',
    ]);
    expect(dropped.get('2026-10-31T12:00:00Z')).toEqual(['matches no keep rule']);
  });

  it('keeps the restore point a backup just committed when a clock that ran ahead dated another later', () => {
    // The older one was taken on a host whose clock ran a day ahead; the run just committed is older by startedAt.
    const ahead = snap('2026-11-04T03:00:00Z');
    const own = snap('2026-11-03T03:00:00Z');
    const policy = { keepLast: 1, keepDaily: 1 };
    const opts = { now: new Date('2026-11-03T03:05:00Z'), timezone: 'UTC' };
    expect(applyRetention([own, ahead], policy, opts).drop.map((s) => s.id)).toEqual([own.id]);
    const decision = applyRetention([own, ahead], policy, { ...opts, keep: own.id });
    expect(decision.drop).toEqual([]);
    expect(decision.reasons.get(own.id)).toEqual(['this run']);
    expect(decision.reasons.get(ahead.id)).toEqual(['last 1', 'daily 2026-11-04']);
    // Kept by a rule, it carries that rule's reason only.
    expect(applyRetention([own], policy, { ...opts, keep: own.id }).reasons.get(own.id)).toEqual([
      'last 1',
      'daily 2026-11-03',
    ]);
  });

  it('names the safety net when only it keeps a snapshot', () => {
    const newest = decide({ snapshots: daily('2027-01-01', 2), policy: { keepWithin: within('1d') } });
    expect(newest.reasons.get('2027-01-02T12:00:00Z')).toEqual(['newest successful restore point']);
    const partial = decide({
      snapshots: [snap('2026-11-02T12:00:00Z'), snap('2026-11-03T12:00:00Z', 'partial')],
      policy: { keepLast: 1 },
    });
    expect(partial.reasons.get('2026-11-02T12:00:00Z')).toEqual(['newest successful restore point']);
    expect(partial.reasons.get('2026-11-03T12:00:00Z')).toEqual(['last 1']);
  });

  it('returns keep and drop in input order', () => {
    const snapshots = [
      snap('2026-11-03T12:00:00Z'),
      snap('2026-11-01T12:00:00Z'),
      snap('2026-11-02T12:00:00Z'),
    ];
    const decision = decide({ snapshots, policy: { keepLast: 2 } });
    expect(decision.keep.map((s) => s.id)).toEqual(['2026-11-03T12:00:00Z', '2026-11-02T12:00:00Z']);
    expect(decision.drop.map((s) => s.id)).toEqual(['2026-11-01T12:00:00Z']);
  });

  it('applies the policy to each scope on its own', () => {
    // Two full restore points, then four database-only ones, one of them the newest partial.
    const full = daily('2026-11-01', 2).map((s) => ({ ...s, scope: 'everything' }));
    const database = daily('2026-11-03', 4).map((s, i) => ({
      ...s,
      scope: 'database',
      status: i === 3 ? ('partial' as const) : ('success' as const),
    }));
    const snapshots = [...full, ...database];
    const decision = applyRetention(
      snapshots,
      { keepLast: 1, keepDaily: 1 },
      { now: new Date('2027-06-01T00:00:00Z'), timezone: 'UTC', scopeOf: (s) => s.scope },
    );
    expect(decision.keep.map((s) => s.id)).toEqual([
      '2026-11-02T12:00:00Z',
      '2026-11-05T12:00:00Z',
      '2026-11-06T12:00:00Z',
    ]);
    expect(decision.reasons.get('2026-11-02T12:00:00Z')).toEqual(['last 1', 'daily 2026-11-02']);
    expect(decision.reasons.get('2026-11-05T12:00:00Z')).toEqual(['newest successful restore point']);
    expect(decision.reasons.get('2026-11-01T12:00:00Z')).toEqual(['matches no keep rule']);
    // Without scopes the database-only runs displace every full one.
    const unscoped = decide({ snapshots, policy: { keepLast: 1, keepDaily: 1 } });
    expect(unscoped.keep.map((s) => s.id)).toEqual(['2026-11-05T12:00:00Z', '2026-11-06T12:00:00Z']);
  });

  it('returns an empty decision for no snapshots', () => {
    const decision = decide({ snapshots: [], policy: { keepLast: 3 } });
    expect(decision.keep).toEqual([]);
    expect(decision.drop).toEqual([]);
    expect(decision.reasons.size).toBe(0);
  });

  it.each<[string, RetentionPolicy, RegExp]>([
    ['a policy without rules', {}, /keeping nothing is refused/],
    ['keepLast 0', { keepLast: 0 }, /keepLast is 0/],
    ['a fractional count', { keepDaily: 1.5 }, /keepDaily is 1.5/],
  ])('refuses %s', (_, policy, message) => {
    for (const snapshots of [[], daily('2026-11-01', 2)]) {
      expect(() => decide({ snapshots, policy })).toThrow(message);
      expect(() => decide({ snapshots, policy })).toThrow(expect.objectContaining({ code: 'ERR_CONFIG' }));
    }
  });

  it('refuses a startedAt that is not a timestamp', () => {
    const broken = { id: 'x', startedAt: 'yesterday', status: 'success' as const };
    expect(() => decide({ snapshots: [broken], policy: { keepLast: 1 } })).toThrow(BackupError);
  });
});

describe('describePolicy and policyFromConfig', () => {
  it('describes the rules in config order', () => {
    expect(describePolicy({ keepWithin: within('30d'), keepDaily: 14, keepLast: 7 })).toBe(
      'keepLast 7, keepDaily 14, keepWithin 30d',
    );
  });

  it('converts the config section, parsing keepWithin and ignoring other keys', () => {
    const section = { keepLast: 7, keepWeekly: 4, keepWithin: '2w', prune: true };
    const policy = policyFromConfig(section);
    expect(policy).toEqual({
      keepLast: 7,
      keepWeekly: 4,
      keepWithin: { years: 0, months: 0, days: 14, hours: 0 },
    });
    expect(describePolicy(policy)).toBe('keepLast 7, keepWeekly 4, keepWithin 14d');
  });

  it('rejects a keepWithin that is not a duration', () => {
    expect(() => policyFromConfig({ keepWithin: '30 days' })).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG' }),
    );
  });
});
