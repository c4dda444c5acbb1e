// The one-runner-in-the-cluster lock: what a backend offers (ClusterLock), how a held lock is kept
// alive and given up (holdLock), and waiting for a busy lock (acquireLock).
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { BackupError, describeError } from '../errors.js';

/** Who holds the lock, as stored with it; times are ISO 8601 by the holder's clock. */
export interface LockHolder {
  /** `${hostname}-${pid}-${random hex}`: unique per acquisition. */
  holder: string;
  /** What the holder runs, e.g. "backup" or "restore". */
  operation: string;
  host: string;
  pid: number;
  since: string;
  expiresAt: string;
  /**
   * In a target's lock file written beside another lock (PairedLock): which one, e.g.
   * "etcd http://10.21.1.44:4001 /deis/backup/lock". Absent in every other record.
   */
  pairedWith?: string;
}

/** A lock we hold; kept alive in the background until released or lost. */
export interface HeldLock {
  /** Our record; expiresAt moves forward with each successful refresh. */
  readonly holder: LockHolder;
  /**
   * Aborts, with a BackupError whose message starts "lost the cluster lock at", when the lock is lost:
   * no refresh succeeded before it expired, or it was removed or taken over by another holder.
   */
  readonly lost: AbortSignal;
  /** Stops refreshing and removes our own lock only (never another holder's). Idempotent; never throws. */
  release(): Promise<void>;
}

/** A lock that at most one runner in the cluster holds at a time. */
export interface ClusterLock {
  /** For logs and messages, e.g. "etcd /deis/backup/lock". */
  readonly where: string;
  /**
   * One attempt to take the lock. `busy` carries the current holder, or undefined when it could not be
   * read (or the lock changed hands during the attempt). Throws when the store cannot be reached.
   */
  tryAcquire(
    operation: string,
    opts: { signal: AbortSignal },
  ): Promise<{ held: HeldLock } | { busy: LockHolder | undefined }>;
}

/** Keeps one backend's lock record: what holdLock calls while the lock is held. */
export interface LockLease {
  /**
   * Extends our lock by the TTL. Returns 'ok', or why the lock is no longer ours (it is gone, or
   * another holder has it). Throws when the store cannot answer; the next tick tries again.
   */
  refresh(opts: { signal: AbortSignal }): Promise<'ok' | { lost: string }>;
  /** Removes our lock record only; a missing record is fine. */
  remove(opts: { signal: AbortSignal }): Promise<void>;
}

/** How long release() waits for the store before leaving our record to expire by itself. */
const RELEASE_TIMEOUT_MS = 10_000;

/** A new holder record for an operation starting now. */
export function newHolder(operation: string, ttlSeconds: number, now = new Date()): LockHolder {
  const host = hostname();
  return {
    holder: `${host}-${process.pid}-${randomBytes(4).toString('hex')}`,
    operation,
    host,
    pid: process.pid,
    since: now.toISOString(),
    expiresAt: new Date(now.getTime() + ttlSeconds * 1000).toISOString(),
  };
}

/** Parses a stored LockHolder; undefined when the text is not one. */
export function parseHolder(text: string): LockHolder | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const strings = ['holder', 'operation', 'host', 'since', 'expiresAt'] as const;
  if (strings.some((k) => typeof v[k] !== 'string') || typeof v['pid'] !== 'number') return undefined;
  if (Number.isNaN(Date.parse(v['since'] as string)) || Number.isNaN(Date.parse(v['expiresAt'] as string))) {
    return undefined;
  }
  return {
    holder: v['holder'] as string,
    operation: v['operation'] as string,
    host: v['host'] as string,
    pid: v['pid'],
    since: v['since'] as string,
    expiresAt: v['expiresAt'] as string,
    ...(typeof v['pairedWith'] === 'string' ? { pairedWith: v['pairedWith'] } : {}),
  };
}

/** "backup by host-a pid 42 since …, expires …", or a phrase for an unknown holder. */
export function describeHolder(h: LockHolder | undefined): string {
  if (h === undefined) return 'an unknown holder';
  return `${h.operation} by ${h.host} pid ${h.pid} since ${h.since}, expires ${h.expiresAt}`;
}

/**
 * Starts keeping a freshly acquired lock: refreshes every ttl/3, retries a failed refresh on the next
 * tick, and aborts `lost` once the lock expires unrefreshed (judged from `acquiredAt`, taken before the
 * acquiring request was sent, so our estimate is never later than the store's) or the lease reports it
 * gone. Timers are unref'd: a held lock never keeps the process alive.
 */
export function holdLock(
  where: string,
  holder: LockHolder,
  lease: LockLease,
  opts: { ttlSeconds: number; acquiredAt: number },
): HeldLock {
  const ttlMs = opts.ttlSeconds * 1000;
  const intervalMs = Math.max(100, Math.floor(ttlMs / 3));
  const lost = new AbortController();
  let current = { ...holder };
  let validUntil = opts.acquiredAt + ttlMs;
  let lastError: unknown;
  let stopped = false;
  let tick: NodeJS.Timeout | undefined;
  let expiry: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> | undefined;
  let released: Promise<void> | undefined;

  const stop = (): void => {
    stopped = true;
    clearTimeout(tick);
    clearTimeout(expiry);
  };
  const lose = (why: string): void => {
    if (lost.signal.aborted) return;
    stop();
    lost.abort(new BackupError('ERR_LOCKED', `lost the cluster lock at ${where}: ${why}`));
  };
  const armExpiry = (): void => {
    clearTimeout(expiry);
    expiry = setTimeout(
      () => {
        const last = lastError === undefined ? '' : ` (last refresh error: ${describeError(lastError)})`;
        lose(`not refreshed before it expired at ${new Date(validUntil).toISOString()}${last}`);
      },
      Math.max(0, validUntil - Date.now()),
    );
    expiry.unref();
  };
  const refresh = async (): Promise<void> => {
    const startedAt = Date.now();
    try {
      // Each attempt ends before the next tick, so a hung store cannot stack up requests.
      const result = await lease.refresh({ signal: AbortSignal.timeout(intervalMs) });
      if (stopped) return;
      if (result === 'ok') {
        lastError = undefined;
        validUntil = startedAt + ttlMs;
        current = { ...current, expiresAt: new Date(validUntil).toISOString() };
        armExpiry();
      } else {
        lose(result.lost);
      }
    } catch (err) {
      // Retried on the next tick; the expiry timer decides when retrying no longer helps.
      lastError = err;
    }
  };
  const schedule = (): void => {
    if (stopped) return;
    tick = setTimeout(() => {
      inFlight = refresh().finally(() => {
        inFlight = undefined;
        schedule();
      });
    }, intervalMs);
    tick.unref();
  };

  armExpiry();
  schedule();

  return {
    get holder() {
      return current;
    },
    lost: lost.signal,
    release() {
      released ??= (async () => {
        stop();
        // A refresh landing after the removal could write our record back (a target put).
        await inFlight;
        try {
          await lease.remove({ signal: AbortSignal.timeout(RELEASE_TIMEOUT_MS) });
        } catch {
          // Best effort: an unremoved record expires by itself after the TTL.
        }
      })();
      return released;
    },
  };
}

/**
 * Takes the lock, retrying about once a second (with jitter) while it is busy until waitSeconds have
 * passed; waitSeconds 0 makes one attempt. onWait is called once for each distinct holder seen while
 * waiting. Returns the last busy answer when the wait ran out; throws when the store cannot be reached
 * or the signal aborts.
 */
export async function acquireLock(
  lock: ClusterLock,
  operation: string,
  opts: { waitSeconds: number; signal: AbortSignal; onWait?: (holder: LockHolder | undefined) => void },
): Promise<{ held: HeldLock } | { busy: LockHolder | undefined }> {
  const deadline = Date.now() + opts.waitSeconds * 1000;
  let reported: string | null = null;
  for (;;) {
    opts.signal.throwIfAborted();
    const result = await lock.tryAcquire(operation, { signal: opts.signal });
    if ('held' in result) return result;
    const remaining = deadline - Date.now();
    if (remaining <= 0) return result;
    const id = result.busy?.holder ?? '';
    if (id !== reported) {
      reported = id;
      opts.onWait?.(result.busy);
    }
    await sleep(Math.min(remaining, 800 + Math.random() * 400), opts.signal);
  }
}

/** Waits ms, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
