// The daemon's readers share one listing of the target, and one that stops waiting does not end it.
import { setTimeout as delay } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { SharedListing } from '../../../src/daemon/shared-listing.js';

/** A listing that takes `ms` and records each run: when it ended, and how (its signal's reason). */
function slowListing(ms: number) {
  const runs: { outcome?: string }[] = [];
  const run = async (signal: AbortSignal): Promise<number> => {
    const record: { outcome?: string } = {};
    runs.push(record);
    try {
      await delay(ms, undefined, { signal });
    } catch (err) {
      record.outcome = `aborted: ${(signal.reason as Error).name}`;
      throw err;
    }
    record.outcome = 'listed';
    return runs.length;
  };
  return { run, runs };
}

describe('SharedListing', () => {
  it('gives readers that come while a listing runs that listing', async () => {
    const { run, runs } = slowListing(100);
    const listing = new SharedListing(run, { limitMs: 5000, stop: new AbortController().signal });
    const signal = AbortSignal.timeout(5000);
    const answers = await Promise.all([listing.get(signal), listing.get(signal), listing.get(signal)]);
    expect(answers).toEqual([1, 1, 1]);
    expect(runs).toEqual([{ outcome: 'listed' }]);
    // Once it has ended, the next reader gets a new one.
    expect(await listing.get(signal)).toBe(2);
  });

  it('lets a reader give up without ending the listing, which the next reader then shares', async () => {
    const { run, runs } = slowListing(400);
    const listing = new SharedListing(run, { limitMs: 5000, stop: new AbortController().signal });
    const impatient = AbortSignal.timeout(50);
    await expect(listing.get(impatient)).rejects.toMatchObject({ name: 'TimeoutError' });
    expect(runs).toEqual([{}]);
    expect(await listing.get(AbortSignal.timeout(5000))).toBe(1);
    expect(runs).toEqual([{ outcome: 'listed' }]);
  });

  it('ends a listing past its own limit, which is its failure for every reader', async () => {
    const { run, runs } = slowListing(5000);
    const listing = new SharedListing(run, { limitMs: 100, stop: new AbortController().signal });
    await expect(listing.get(AbortSignal.timeout(5000))).rejects.toMatchObject({ name: 'AbortError' });
    expect(runs).toEqual([{ outcome: 'aborted: TimeoutError' }]);
  });

  it('ends the listing when the daemon stops', async () => {
    const { run, runs } = slowListing(5000);
    const stop = new AbortController();
    const listing = new SharedListing(run, { limitMs: 5000, stop: stop.signal });
    const reading = listing.get(AbortSignal.timeout(5000));
    stop.abort(new Error('shutting down'));
    await expect(reading).rejects.toMatchObject({ name: 'AbortError' });
    expect(runs).toEqual([{ outcome: 'aborted: Error' }]);
  });

  it('with startedAfter, waits out a listing begun before and takes one begun after', async () => {
    const { run, runs } = slowListing(150);
    const listing = new SharedListing(run, { limitMs: 5000, stop: new AbortController().signal });
    const signal = AbortSignal.timeout(5000);
    const earlier = listing.get(signal);
    await delay(20);
    const fresh = listing.get(signal, { startedAfter: Date.now() });
    expect(await earlier).toBe(1);
    expect(await fresh).toBe(2);
    expect(runs).toEqual([{ outcome: 'listed' }, { outcome: 'listed' }]);
  });
});
