import { getEventListeners } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { Operations } from '../../src/operations.js';

/** The signals Node 20 keeps on a signal that AbortSignal.any joined (an internal Set of WeakRefs). */
function dependants(signal: AbortSignal): number {
  const symbol = Object.getOwnPropertySymbols(signal).find((s) => s.description === 'kDependantSignals');
  // No such symbol at all means Node changed how it joins signals: check the leak again by hand.
  if (symbol === undefined) return 0;
  return (signal as unknown as Record<symbol, Set<unknown> | undefined>)[symbol]?.size ?? 0;
}

describe('Operations', () => {
  it('leaves nothing on the shutdown signal once an operation ends, however often its signal is joined', async () => {
    const shutdown = new AbortController();
    const operations = new Operations(shutdown.signal);
    // The symbol must exist once a signal has been joined, or the check below could not fail.
    const probe = new AbortController();
    AbortSignal.any([probe.signal]);
    expect(Object.getOwnPropertySymbols(probe.signal).map((s) => s.description)).toContain(
      'kDependantSignals',
    );
    for (let i = 0; i < 20; i++) {
      const started = operations.start('backup', 'test', async (signal) => {
        // As the S3 client, the lock and the dump do for every request.
        AbortSignal.any([signal, new AbortController().signal]);
        AbortSignal.any([signal, new AbortController().signal]);
        await sleep(1);
        return { status: 'success', result: null };
      });
      expect('started' in started).toBe(true);
      expect(await operations.idle(5000)).toBe(true);
    }
    expect(dependants(shutdown.signal)).toBe(0);
    expect(getEventListeners(shutdown.signal, 'abort')).toHaveLength(0);
  });

  it('aborts the running operation when the shutdown signal does, and on cancel', async () => {
    const shutdown = new AbortController();
    const operations = new Operations(shutdown.signal);
    const untilAborted = (signal: AbortSignal) =>
      new Promise<never>((_resolve, reject) => {
        signal.addEventListener('abort', () => {
          reject(signal.reason as Error);
        });
      });
    const first = operations.start('restore', 'test', untilAborted);
    if (!('started' in first)) throw new Error('not started');
    expect(operations.start('backup', 'test', untilAborted)).toHaveProperty('busy.id', first.started.id);
    expect(operations.cancel(first.started.id)).toBe(true);
    await operations.idle(5000);
    expect(operations.get(first.started.id)).toMatchObject({ status: 'aborted', error: 'cancelled' });
    const second = operations.start('backup', 'test', untilAborted);
    if (!('started' in second)) throw new Error('not started');
    shutdown.abort(new Error('daemon stopping'));
    await operations.idle(5000);
    expect(operations.get(second.started.id)).toMatchObject({ status: 'aborted', error: 'daemon stopping' });
    expect(() => operations.start('backup', 'test', untilAborted)).toThrow(/shutting down/);
  });
});
