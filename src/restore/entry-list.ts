// The index entries a restore plans with, kept as JSON text in fixed 1 MiB blocks instead of one
// object per entry. At 50,000 objects the objects took about 30 MB of V8's heap, and V8 lets a heap
// with that much live data grow to three times it before collecting: the restore peaked at 227 MiB.
// As text they are about 12 MB outside the heap, and an entry is parsed again when its turn comes.
// Blocks are added, never grown: one buffer doubled and copied left some 20 MB of dead copies.
import type { IndexEntry } from '../repository/manifest.js';

const BLOCK = 1024 * 1024;
const FIRST_COUNT = 1024;

/** An append-only list of index entries, read back by position. */
export class EntryList {
  private readonly blocks: Buffer[] = [];
  /** Bytes used in the last block. */
  private used = 0;
  /** Entry i's text: block blockOf[i], from startOf[i], byteLengthOf[i] bytes. */
  private blockOf = new Uint32Array(FIRST_COUNT);
  private startOf = new Uint32Array(FIRST_COUNT);
  private byteLengthOf = new Uint32Array(FIRST_COUNT);
  private count = 0;

  get length(): number {
    return this.count;
  }

  push(entry: IndexEntry): void {
    const json = JSON.stringify(entry);
    const length = Buffer.byteLength(json);
    let block = this.blocks.at(-1);
    if (block === undefined || this.used + length > block.length) {
      // An entry never spans two blocks; one longer than a block gets a block of its own size.
      block = Buffer.allocUnsafe(Math.max(BLOCK, length));
      this.blocks.push(block);
      this.used = 0;
    }
    if (this.count === this.blockOf.length) this.grow();
    this.blockOf[this.count] = this.blocks.length - 1;
    this.startOf[this.count] = this.used;
    this.byteLengthOf[this.count] = length;
    this.count++;
    this.used += block.write(json, this.used);
  }

  /** Entry `index` (0 ≤ index < length), parsed anew on each call. */
  at(index: number): IndexEntry {
    if (index < 0 || index >= this.count) throw new RangeError(`no entry ${index} of ${this.count}`);
    const block = this.blocks[this.blockOf[index] ?? 0] as Buffer;
    const start = this.startOf[index] ?? 0;
    return JSON.parse(block.toString('utf8', start, start + (this.byteLengthOf[index] ?? 0))) as IndexEntry;
  }

  *[Symbol.iterator](): IterableIterator<IndexEntry> {
    for (let i = 0; i < this.count; i++) yield this.at(i);
  }

  private grow(): void {
    const grown = (from: Uint32Array<ArrayBuffer>): Uint32Array<ArrayBuffer> => {
      const to = new Uint32Array(from.length * 2);
      to.set(from);
      return to;
    };
    this.blockOf = grown(this.blockOf);
    this.startOf = grown(this.startOf);
    this.byteLengthOf = grown(this.byteLengthOf);
  }
}
