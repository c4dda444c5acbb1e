// The etcd lock, also announced in the target's locks/: a runner whose config resolves to the target
// backend (a one-off `docker run` without ETCD, say) sees the daemon's etcd lock there, and the
// daemon sees its lock file, so two runners never hold "the" lock in two places at once.
import type { ClusterLock, HeldLock, LockHolder } from './lock.js';

/** ClusterLock held only when both locks are: `first` (etcd) decides, `second` (the target) announces. */
export class PairedLock implements ClusterLock {
  readonly where: string;
  private readonly first: ClusterLock;
  private readonly second: ClusterLock;

  constructor(first: ClusterLock, second: ClusterLock) {
    this.first = first;
    this.second = second;
    this.where = `${first.where} (and ${second.where})`;
  }

  async tryAcquire(
    operation: string,
    opts: { signal: AbortSignal },
  ): Promise<{ held: HeldLock } | { busy: LockHolder | undefined }> {
    const first = await this.first.tryAcquire(operation, opts);
    if (!('held' in first)) return first;
    let second;
    try {
      second = await this.second.tryAcquire(operation, opts);
    } catch (err) {
      await first.held.release();
      throw err;
    }
    if (!('held' in second)) {
      await first.held.release();
      return second;
    }
    return { held: pair(first.held, second.held) };
  }
}

/**
 * One held lock of two: lost when either is, released together. The second goes as soon as the
 * first is lost: its holder no longer holds the etcd key, and the next one takes the file over.
 */
function pair(first: HeldLock, second: HeldLock): HeldLock {
  first.lost.addEventListener(
    'abort',
    () => {
      void second.release();
    },
    { once: true },
  );
  return {
    get holder() {
      return first.holder;
    },
    lost: AbortSignal.any([first.lost, second.lost]),
    release: async () => {
      await Promise.all([second.release(), first.release()]);
    },
  };
}
