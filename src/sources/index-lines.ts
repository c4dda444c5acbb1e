// A bucket's new index, written while its objects are captured. Lines leave in listing order, each
// as soon as every object listed before it is settled, so only the lines waiting behind a slower
// object are held, not the whole index (about 500 bytes per object, 25 MB for 50,000 objects).
import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import type { IndexEntry } from '../repository/manifest.js';

/** Lines go out in batches of this size: each write downstream (gzip) is a thread-pool trip. */
const BATCH = 64 * 1024;

/** The index lines of one run, in listing order. */
export class IndexLines {
  /** The JSON lines, for the index artifact's put. */
  readonly readable: Readable;
  /** Lines written so far. */
  lines = 0;
  private readonly out = new PassThrough();
  /** Settled objects that wait for an earlier one: their line, or undefined for no line. */
  private readonly waiting = new Map<number, string | undefined>();
  private next = 0;
  private batch = '';

  constructor() {
    this.readable = this.out;
  }

  /**
   * Records the outcome of the object listed at position `seq` (counting from 0): its entry, or
   * undefined when it gets no line (vanished, failed). Every position must be settled once, or the
   * lines after it never leave. Resolves when the index can take more.
   */
  async settle(seq: number, entry: IndexEntry | undefined): Promise<void> {
    this.waiting.set(seq, entry === undefined ? undefined : `${JSON.stringify(entry)}\n`);
    while (this.waiting.has(this.next)) {
      const line = this.waiting.get(this.next);
      this.waiting.delete(this.next);
      this.next++;
      if (line === undefined) continue;
      this.batch += line;
      this.lines++;
    }
    if (this.batch.length >= BATCH && !this.write() && !this.out.destroyed) await once(this.out, 'drain');
  }

  /** Ends the index after the last settled line; throws if an object was never settled. */
  end(): void {
    if (this.waiting.size > 0)
      throw new Error(`index: ${this.waiting.size} line(s) wait for an object never settled`);
    this.write();
    this.out.end();
  }

  /** Abandons the index: its put fails with `err`. */
  fail(err: Error): void {
    this.out.destroy(err);
  }

  private write(): boolean {
    if (this.batch === '') return true;
    const text = this.batch;
    this.batch = '';
    return this.out.write(text);
  }
}
