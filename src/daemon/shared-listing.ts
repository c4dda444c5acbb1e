// One listing of the target at a time for the daemon's readers (/readyz, /snapshots, the minute's
// probe, a run's refresh). Each reader waits only as long as it may; the listing itself runs to its
// own, longer limit. A reader giving up says nothing of the target: a large repository on a slow
// store may take longer than a probe's 10 s, and must not count as a target that is down.
import { withDeadline } from '../deadline.js';

/** Listings shared between readers; `run` lists, and decides what its outcome says of the target. */
export class SharedListing<T> {
  private readonly run: (signal: AbortSignal) => Promise<T>;
  private readonly limitMs: number;
  private readonly stop: AbortSignal;
  private current: { promise: Promise<T>; startedAt: number } | undefined;

  /**
   * @param run One listing. It is given a signal that aborts after `limitMs` or on `stop`; such an
   *   abort is the listing's own failure (a target that hangs), which `run` records as it sees fit.
   */
  constructor(run: (signal: AbortSignal) => Promise<T>, opts: { limitMs: number; stop: AbortSignal }) {
    this.run = run;
    this.limitMs = opts.limitMs;
    this.stop = opts.stop;
  }

  /**
   * The listing in progress, or a new one, waited for until `signal` aborts (then rejects with its
   * reason and leaves the listing running for the next reader). With `startedAfter`, a listing begun
   * earlier is not taken: one that starts after it is (a run's refresh must see its own commit).
   */
  async get(signal: AbortSignal, opts: { startedAfter?: number } = {}): Promise<T> {
    let current = this.current;
    while (
      current !== undefined &&
      opts.startedAfter !== undefined &&
      current.startedAt <= opts.startedAfter
    ) {
      await waitFor(
        current.promise.catch(() => undefined),
        signal,
      );
      current = this.current;
    }
    return waitFor((current ?? this.start()).promise, signal);
  }

  private start(): { promise: Promise<T>; startedAt: number } {
    const startedAt = Date.now();
    // Joined by hand, not with AbortSignal.any: the daemon-long `stop` would keep one entry per join.
    const limit = withDeadline(undefined, this.limitMs);
    const stopped = new AbortController();
    const onStop = (): void => {
      stopped.abort(this.stop.reason);
    };
    if (this.stop.aborted) onStop();
    else this.stop.addEventListener('abort', onStop, { once: true });
    const listing = {
      promise: this.run(AbortSignal.any([limit.signal, stopped.signal])).finally(() => {
        limit.dispose();
        this.stop.removeEventListener('abort', onStop);
        if (this.current === listing) this.current = undefined;
      }),
      startedAt,
    };
    // Readers that gave up no longer hold it: its failure is run's to record, not unhandled.
    listing.promise.catch(() => undefined);
    this.current = listing;
    return listing;
  }
}

/** Settles as `promise` does, or rejects with the signal's reason once it aborts. */
function waitFor<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      reject(signal.reason as Error);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(resolve, reject).finally(() => {
      signal.removeEventListener('abort', onAbort);
    });
  });
}
