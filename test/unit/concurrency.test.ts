// mapConcurrently: input order, the bound on calls in flight, and no new call after a failure.
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { mapConcurrently } from '../../src/concurrency.js';

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
