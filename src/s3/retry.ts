// Which failed S3 requests are sent again, and how long to wait first: a gateway that answers 503
// SlowDown under load, or a kept-alive connection it reset, should not fail a whole night's backup.
import { setTimeout as sleep } from 'node:timers/promises';
import { S3Error } from './responses.js';

/** Waits before each retry, in ms: three retries, 5.25 s in all. */
export const RETRY_DELAYS_MS: readonly number[] = [250, 1_000, 4_000];

/** Connection failures before any answer that a new connection may not meet. */
const TRANSIENT_CODES = new Set(['ECONNRESET', 'EPIPE']);

/**
 * True for a failure worth sending the same request again: the server's 500, 502, 503 or 504, or
 * a connection reset before its answer. Not a refused connection (the gateway is down: said at
 * once) and not a timeout, ours or the kernel's (ETIMEDOUT): its wait is already long.
 */
export function isTransient(err: unknown): boolean {
  if (!(err instanceof S3Error)) return false;
  if (err.status === 500 || (err.status >= 502 && err.status <= 504)) return true;
  return err.status === 0 && TRANSIENT_CODES.has(err.s3Code);
}

/**
 * Runs `attempt` until it succeeds, fails for good, or has failed transiently once more than there
 * are delays; the last failure is thrown, its message saying how many attempts were made.
 */
export async function withRetries<T>(attempt: () => Promise<T>, signal: AbortSignal): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (err) {
      const delay = RETRY_DELAYS_MS[tries - 1];
      if (!isTransient(err) || signal.aborted) throw err;
      if (delay === undefined) throw retriedError(err as S3Error, tries);
      await sleep(delay, undefined, { signal }).catch(() => {
        throw signal.reason;
      });
    }
  }
}

/** The last failure, with the number of attempts in its message and in `attempts`. */
function retriedError(err: S3Error, tries: number): S3Error {
  const last = new S3Error(err.status, err.s3Code, `${err.message}${attemptsNote(tries)}`, {
    cause: err.cause,
  });
  last.attempts = tries;
  return last;
}

/** ` (4 attempts)` after an error's text when the request was sent more than once, else nothing. */
export function attemptsNote(attempts: number): string {
  return attempts > 1 ? ` (${attempts} attempts)` : '';
}
