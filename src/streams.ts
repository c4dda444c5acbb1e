// Stream plumbing shared by sources and restore: chains whose errors reach the reader, and gzip
// compression spread over several threads.
import { availableParallelism } from 'node:os';
import { Transform, type Duplex, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';

/**
 * Pipes source through transforms and returns the last one for reading. Unlike `.pipe()`, an error
 * anywhere destroys the whole chain, so the reader sees it instead of waiting for an end.
 */
export function chain(source: Readable, ...transforms: [Duplex, ...Duplex[]]): Readable {
  const last = transforms[transforms.length - 1] as Duplex;
  pipeline(source, ...transforms).catch((err: unknown) => {
    last.destroy(err as Error);
  });
  return last;
}

/**
 * Calls onQuiet once `sent()` has not grown for `ms` (at most twice that before it is noticed) while
 * `waiting()` is false, i.e. nothing of the output waits unread: a slow reader is not a quiet
 * producer. Returns the stop.
 */
export function watchQuiet(
  sent: () => number,
  waiting: () => boolean,
  ms: number,
  onQuiet: () => void,
): () => void {
  let seen = sent();
  let timer: NodeJS.Timeout;
  const arm = (): void => {
    timer = setTimeout(() => {
      const now = sent();
      if (now === seen && !waiting()) onQuiet();
      else {
        seen = now;
        arm();
      }
    }, ms);
  };
  arm();
  return () => {
    clearTimeout(timer);
  };
}

/**
 * Work that a quiet watch may cut off, or `outer` stop, and whose end is not waited for once it is
 * stopped: a call or a process blocked on a hung mount may not return, or die, until it answers.
 */
export class Stoppable {
  private readonly quiet = new AbortController();
  /** Aborts when the watch cuts the work off or `outer` aborts: give it to the work. */
  readonly signal: AbortSignal;
  private stopWatching = (): void => undefined;

  constructor(outer: AbortSignal) {
    this.signal = AbortSignal.any([outer, this.quiet.signal]);
  }

  /** True once the watch has cut the work off. */
  get cutOff(): boolean {
    return this.quiet.signal.aborted;
  }

  /** Cuts the work off once `sent()` has not grown for `ms` while `waiting()` is false (watchQuiet). */
  watch(sent: () => number, waiting: () => boolean, ms: number): void {
    this.stopWatching = watchQuiet(sent, waiting, ms, () => {
      this.quiet.abort();
    });
  }

  /**
   * Settles as `work` does, or rejects as soon as the signal aborts, with `stopped()` (called then)
   * or else the signal's reason. The watch ends either way, and the work is left to settle alone.
   */
  async race<T>(work: Promise<T>, stopped: () => Error = () => this.signal.reason as Error): Promise<T> {
    const signal = this.signal;
    const stop = new Promise<never>((_resolve, reject) => {
      if (signal.aborted) reject(stopped());
      else
        signal.addEventListener(
          'abort',
          () => {
            reject(stopped());
          },
          { once: true },
        );
    });
    try {
      return await Promise.race([work, stop]);
    } finally {
      this.stopWatching();
      work.catch(() => undefined);
    }
  }
}

/** A pass-through that counts the bytes through it. */
export class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
}

const gzipBlock = promisify(gzip);

/** The gzip level of `gzip`, `tar czf` and `pg_dumpall | gzip` when none is given. */
export const GZIP_LEVEL = 6;

/** Input bytes per gzip member: large enough that a fresh dictionary per member costs ~0.1 %. */
const GZIP_BLOCK = 1024 * 1024;

/**
 * Output buffer of one member's compression: room for a whole block even when it does not compress,
 * so a member is one trip to the thread pool instead of one per 16 KiB of output (the default).
 */
const GZIP_OUTPUT_CHUNK = GZIP_BLOCK + 64 * 1024;

/**
 * gzip (level 6 unless told) that compresses on up to `parallel` threads of the libuv pool at once.
 * The input is cut into 1 MiB blocks, each compressed as a gzip member of its own, and the members
 * are emitted in input order. Concatenated members are one valid gzip file (RFC 1952 section 2.2):
 * `gunzip`, GNU `tar -xz` and zlib.createGunzip read them as a single stream. A single-threaded
 * createGzip kept compression the bottleneck of the volume and database sources (bench/results.md).
 * At most `parallel` blocks are compressing and one is filling, so memory stays a few MiB.
 */
export function createParallelGzip(
  opts: { level?: number; parallel?: number; blockSize?: number } = {},
): Transform {
  return new ParallelGzip(
    opts.level ?? GZIP_LEVEL,
    // Leave a pool thread to file reads and writes (the pool has 4 unless UV_THREADPOOL_SIZE says).
    opts.parallel ?? Math.min(3, Math.max(1, availableParallelism())),
    opts.blockSize ?? GZIP_BLOCK,
  );
}

class ParallelGzip extends Transform {
  private readonly level: number;
  private readonly parallel: number;
  private readonly blockSize: number;
  private filling: Buffer[] = [];
  private fillingBytes = 0;
  private members = 0;
  /** Members being compressed, oldest first. */
  private readonly compressing: Promise<Buffer>[] = [];

  constructor(level: number, parallel: number, blockSize: number) {
    super();
    this.level = level;
    this.parallel = parallel;
    this.blockSize = blockSize;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.filling.push(chunk);
    this.fillingBytes += chunk.length;
    if (this.fillingBytes < this.blockSize) {
      callback();
      return;
    }
    this.compressBlocks(false).then(() => {
      callback();
    }, callback);
  }

  override _flush(callback: TransformCallback): void {
    this.compressBlocks(true).then(() => {
      callback();
    }, callback);
  }

  /** Starts a member for each full block (and the rest when `final`), emitting finished ones in order. */
  private async compressBlocks(final: boolean): Promise<void> {
    while (this.fillingBytes >= this.blockSize || (final && this.fillingBytes > 0)) {
      const all = this.filling.length === 1 ? (this.filling[0] as Buffer) : Buffer.concat(this.filling);
      const block = all.subarray(0, this.blockSize);
      const rest = all.subarray(block.length);
      this.filling = rest.length > 0 ? [rest] : [];
      this.fillingBytes = rest.length;
      this.start(block);
      while (this.compressing.length >= this.parallel) await this.emitOldest();
    }
    if (!final) return;
    // An empty input still makes a gzip file: one empty member.
    if (this.members === 0 && this.compressing.length === 0) this.start(Buffer.alloc(0));
    while (this.compressing.length > 0) await this.emitOldest();
  }

  private start(block: Buffer): void {
    const member = gzipBlock(block, { level: this.level, chunkSize: GZIP_OUTPUT_CHUNK });
    // Awaited in order by emitOldest; this only keeps a failure from being reported as unhandled
    // while an older member is still awaited.
    member.catch(() => undefined);
    this.compressing.push(member);
  }

  private async emitOldest(): Promise<void> {
    const member = this.compressing.shift();
    if (!member) return;
    this.push(await member);
    this.members++;
  }
}
