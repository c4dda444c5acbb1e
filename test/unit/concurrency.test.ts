// mapConcurrently: input order, the bound on calls in flight, and no new call after a failure.
// Limiter: one bound shared by several loops, released on failure too. forEachLimited: the same over
// a sequence read as the workers go.
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { forEachLimited, Limiter, mapConcurrently } from '../../src/concurrency.js';

describe('mapConcurrently', () => {
  it('returns results in input order with at most `limit` calls in flight', async () => {
    let inFlight = 0;
    let most = 0;
    const items = Array.from({ length: 20 }, (_, i) => i);
    const results = await mapConcurrently(items, 3, async (i) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await sleep((i * 7) % 5);
      inFlight--;
      return i * 2;
    });
    expect(results).toEqual(items.map((i) => i * 2));
    expect(most).toBe(3);
  });

  it('starts no call after a failure and throws it once the calls in flight settle', async () => {
    const started: number[] = [];
    let settled = 0;
    const run = mapConcurrently([0, 1, 2, 3, 4, 5, 6, 7], 2, async (i) => {
      started.push(i);
      await sleep(i === 1 ? 1 : 20);
      settled++;
      if (i === 1) throw new Error('item 1 failed');
      return i;
    });
    await expect(run).rejects.toThrow('item 1 failed');
    expect(started).toEqual([0, 1]);
    expect(settled).toBe(2);
  });

  it('handles an empty list', async () => {
    expect(await mapConcurrently([], 4, () => Promise.resolve(1))).toEqual([]);
  });
});

describe('Limiter', () => {
  it('bounds the calls of several loops together and frees a slot when a call fails', async () => {
    const limiter = new Limiter(2);
    let inFlight = 0;
    let most = 0;
    const call = async (fail: boolean): Promise<string> => {
      inFlight++;
      most = Math.max(most, inFlight);
      await sleep(2);
      inFlight--;
      if (fail) throw new Error('failed call');
      return 'ok';
    };
    const loop = async (n: number): Promise<string[]> => {
      const out: string[] = [];
      for (let i = 0; i < n; i++) {
        out.push(await limiter.run(() => call(i === 1)).catch((err: unknown) => (err as Error).message));
      }
      return out;
    };
    const results = await Promise.all([loop(4), loop(4), loop(4), loop(4)]);
    expect(most).toBe(2);
    for (const r of results) expect(r).toEqual(['ok', 'failed call', 'ok', 'ok']);
    // Every slot came back: two calls still run at once.
    most = 0;
    await Promise.all([limiter.run(() => call(false)), limiter.run(() => call(false))]);
    expect(most).toBe(2);
  });
});

describe('forEachLimited', () => {
  it('reads an async sequence only as fast as the workers take it', async () => {
    let produced = 0;
    let inFlight = 0;
    let most = 0;
    let ahead = 0;
    const done: number[] = [];
    async function* items(): AsyncGenerator<number> {
      for (let i = 0; i < 12; i++) {
        await sleep(0);
        produced++;
        yield i;
      }
    }
    await forEachLimited(items(), 3, async (i) => {
      inFlight++;
      most = Math.max(most, inFlight);
      ahead = Math.max(ahead, produced - done.length);
      await sleep(10);
      done.push(i);
      inFlight--;
    });
    expect(done.sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(most).toBe(3);
    expect(ahead).toBeLessThanOrEqual(3);
  });

  it('takes no item after a failure and throws it once the running ones settle', async () => {
    const started: number[] = [];
    const run = forEachLimited([0, 1, 2, 3, 4, 5], 2, async (i) => {
      started.push(i);
      await sleep(i === 0 ? 1 : 10);
      if (i === 0) throw new Error('item 0 failed');
    });
    await expect(run).rejects.toThrow('item 0 failed');
    expect(started).toEqual([0, 1]);
  });
});
