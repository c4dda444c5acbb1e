// Small helpers of the restore drill: a bounded worker pool over a (possibly async) sequence, and a
// problem list that keeps the first lines and counts the rest, so a bad bucket cannot flood a report.

/**
 * Runs `work` on each item with at most `limit` running at once, taking items in order as workers
 * free up (an async iterable is read only as fast as the workers go, so memory stays bounded). The
 * first rejection stops new items from being taken and is rethrown once the running ones settle.
 */
export async function forEachLimited<T>(
  items: Iterable<T> | AsyncIterable<T>,
  limit: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  const iterator: Iterator<T> | AsyncIterator<T> =
    Symbol.asyncIterator in items ? items[Symbol.asyncIterator]() : items[Symbol.iterator]();
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (!failure) {
      let next: IteratorResult<T>;
      try {
        next = await iterator.next();
      } catch (err) {
        failure ??= { err };
        return;
      }
      if (next.done === true) return;
      try {
        await work(next.value);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, limit) }, worker));
  if (failure) {
    try {
      await iterator.return?.();
    } catch {
      // The work's failure is the one worth reporting.
    }
    throw failure.err;
  }
}

/** Problems of one check: the first `max` lines kept, the rest counted. */
export class ProblemList {
  private readonly kept: string[] = [];
  private dropped = 0;
  private readonly max: number;

  constructor(max = 50) {
    this.max = max;
  }

  /** Adds one line; it names the thing (bucket/key or path) and says what differs. */
  add(line: string): void {
    if (this.kept.length < this.max) this.kept.push(line);
    else this.dropped++;
  }

  /** Number of problems added, kept or not. */
  get count(): number {
    return this.kept.length + this.dropped;
  }

  /** The kept lines, plus one line counting the dropped ones. */
  lines(): string[] {
    return this.dropped > 0 ? [...this.kept, `… and ${this.dropped} more`] : [...this.kept];
  }
}
