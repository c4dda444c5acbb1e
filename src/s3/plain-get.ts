// GETs of whole objects over plain HTTP, each body read by the kernel straight into the buffers the
// reader gets: no parser between, no 64 KiB buffer per socket read left for the garbage collector.
// On the 1 GiB object a GET and its sha256 took 0.7 s of CPU this way against 1.2–1.6 s through
// node:http, and the process peaked 30 MiB lower. Only answers with a Content-Length are read here
// (radosgw's to a GET, errors included); any other gives `undefined`, and the caller asks again
// through node:http.
import net from 'node:net';
import { Readable } from 'node:stream';
import { S3Error } from './responses.js';

/**
 * Size of the buffers a body arrives in (the last one is the size of what is left). Not a power of
 * two: a directory target writes a body in batches of whole chunks, and batches of exactly 1 MiB
 * land on 1 MiB boundaries, where Linux caches the file in 1 MiB folios. On the benchmark machine
 * (a VM whose host takes back free memory) those cost up to six times more to fill: `dd` of 2 GiB
 * took 0.3–2.4 s of system time in 1 MiB writes and 0.35–0.40 s in 1000 KiB writes, and a first
 * backup 1.5–2 s more with 256 KiB chunks than with these.
 */
const BODY_CHUNK = 192 * 1024;
/**
 * Full-size buffers kept for the next bodies once their readers hand them back (9 MiB): a fresh
 * one costs the kernel a page fault per 4 KiB, and V8 a collection per 64 MiB or so of them.
 */
const SPARE_CHUNKS = 48;
/** Room for an answer's status line and headers, and the first body bytes read with them. */
const HEAD_ROOM = 64 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');

/** What a plain GET answered: its status, headers (names lowercased) and body. */
export interface PlainAnswer {
  status: number;
  headers: Record<string, string>;
  body: Readable;
  /** Takes back a chunk of the body its reader is done with, to read a later body into. */
  recycle: (chunk: Buffer) => void;
}

/** Where and how the GETs connect. */
export interface PlainGetOptions {
  /** How errors name the server: `host:port` as in the endpoint. */
  name: string;
  host: string;
  port: number;
  maxSockets: number;
  /** A request fails once nothing has moved on its connection for this long, unless its reader waits. */
  timeoutMs: number;
  /** An unused kept-alive connection is closed after this long. */
  idleMs: number;
}

/** Kept-alive connections for plain GETs, at most maxSockets of them busy at once. */
export class PlainGets {
  /** Kept-alive connections with no request, the most recently used last. */
  private readonly idle: Connection[] = [];
  private readonly spare: Buffer[] = [];
  /** The full-size buffers now lent to a body: only those are taken back, once each. */
  private readonly lent = new WeakSet<ArrayBufferLike>();
  private readonly waiting: (() => void)[] = [];
  private busy = 0;
  private closed = false;
  private readonly options: PlainGetOptions;

  constructor(options: PlainGetOptions) {
    this.options = options;
  }

  /**
   * Sends `GET path` with `headers`; resolves once the answer's head is read: with the answer when
   * it has a Content-Length (whatever its status), `undefined` for any other (a chunked body: its
   * connection is dropped unread). A connection failure before the head rejects with an Error
   * carrying the errno `code`.
   */
  async get(
    path: string,
    headers: Record<string, string>,
    signal: AbortSignal,
  ): Promise<PlainAnswer | undefined> {
    if (this.busy < this.options.maxSockets) this.busy++;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    if (signal.aborted) {
      this.freeSlot();
      throw signal.reason;
    }
    // The most recently used first: the oldest is the likeliest to have been closed by the server.
    const conn =
      this.idle.pop() ??
      new Connection(this.options, {
        requestOver: (c) => {
          this.requestOver(c);
        },
        closed: (c) => {
          const at = this.idle.indexOf(c);
          if (at >= 0) this.idle.splice(at, 1);
        },
        chunk: (size) => this.chunk(size),
        recycle: this.recycle,
      });
    let text = `GET ${path} HTTP/1.1\r\n`;
    for (const [name, value] of Object.entries(headers)) text += `${name}: ${value}\r\n`;
    return conn.request(`${text}\r\n`, signal);
  }

  /** Closes the idle connections; busy ones close when their request is over. */
  close(): void {
    this.closed = true;
    for (const conn of this.idle.splice(0)) conn.destroy();
  }

  /**
   * Takes back a full-size buffer a body's reader is done with; the next body is read into it, so
   * a reader hands back each chunk once, after its last use. Anything else is left to the garbage
   * collector, and so is a chunk handed back again before it was lent out again.
   */
  private readonly recycle = (chunk: Buffer): void => {
    const whole = chunk.buffer;
    if (chunk.byteOffset !== 0 || chunk.length !== BODY_CHUNK || !this.lent.has(whole)) return;
    this.lent.delete(whole);
    if (this.spare.length < SPARE_CHUNKS) this.spare.push(chunk);
  };

  /** A buffer for the next `size` bytes of a body: a spare one when it is full-size. */
  private chunk(size: number): Buffer {
    if (size !== BODY_CHUNK) return Buffer.allocUnsafe(size);
    const chunk = this.spare.pop() ?? Buffer.allocUnsafeSlow(BODY_CHUNK);
    this.lent.add(chunk.buffer);
    return chunk;
  }

  /** A request is over: its connection waits for the next one if it can, and its slot is free. */
  private requestOver(conn: Connection): void {
    if (conn.isIdle() && !this.closed) this.idle.push(conn);
    else conn.destroy();
    this.freeSlot();
  }

  private freeSlot(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.busy--;
  }
}

/** What a connection tells its pool. */
interface Owner {
  /** Once per request, when its body is read whole or it failed. */
  requestOver(conn: Connection): void;
  /** When the connection closes, whatever its state. */
  closed(conn: Connection): void;
  /** A buffer for `size` bytes of a body. */
  chunk(size: number): Buffer;
  readonly recycle: (chunk: Buffer) => void;
}

type State = 'idle' | 'head' | 'body' | 'closed';

/** One kept-alive connection, and the request on it if any. */
class Connection {
  private state: State = 'idle';
  private reusable = true;
  private readonly socket: net.Socket;
  private readonly head = Buffer.allocUnsafe(HEAD_ROOM);
  private headLength = 0;
  private answered: ((answer: PlainAnswer | undefined) => void) | undefined;
  private failed: ((err: Error) => void) | undefined;
  private body: BodyStream | undefined;
  /** The buffer the body's next bytes go into, how far it is filled, and how many are still to come. */
  private chunk: Buffer = Buffer.alloc(0);
  private filled = 0;
  private left = 0;
  /** Reading stopped because the body's reader has enough waiting. */
  private paused = false;
  private signal: AbortSignal | undefined;
  private readonly onAbort = (): void => {
    this.fail(this.signal?.reason as Error);
  };
  private readonly options: PlainGetOptions;
  private readonly owner: Owner;

  constructor(options: PlainGetOptions, owner: Owner) {
    this.options = options;
    this.owner = owner;
    this.socket = net.connect({
      host: options.host,
      port: options.port,
      noDelay: true,
      onread: { buffer: () => this.nextBuffer(), callback: (n) => this.received(n) },
    });
    this.socket.setTimeout(options.idleMs);
    this.socket.on('timeout', () => {
      this.timedOut();
    });
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      this.fail(connectionError(err.code ?? 'ECONNRESET', err));
    });
    this.socket.on('end', () => {
      this.fail(connectionError('ECONNRESET'));
    });
    this.socket.on('close', () => {
      this.fail(connectionError('ECONNRESET'));
    });
  }

  isIdle(): boolean {
    return this.state === 'idle' && this.reusable;
  }

  request(text: string, signal: AbortSignal): Promise<PlainAnswer | undefined> {
    return new Promise((resolve, reject) => {
      this.answered = resolve;
      this.failed = reject;
      if (this.state !== 'idle') {
        // Closed while it waited in the pool, between its last event and this request.
        this.state = 'head';
        this.fail(connectionError('ECONNRESET'));
        return;
      }
      this.state = 'head';
      if (signal.aborted) {
        this.fail(signal.reason as Error);
        return;
      }
      this.signal = signal;
      signal.addEventListener('abort', this.onAbort, { once: true });
      this.socket.ref();
      this.socket.setTimeout(this.options.timeoutMs);
      this.socket.write(text, 'latin1');
    });
  }

  destroy(): void {
    this.reusable = false;
    this.socket.destroy();
  }

  /** Where the next socket read goes: the body's current buffer, or the room for a head. */
  private nextBuffer(): Uint8Array {
    if (this.state === 'body') return this.chunk.subarray(this.filled);
    return this.head.subarray(this.headLength);
  }

  /** `n` bytes were read where nextBuffer said; false stops reading until the body's reader asks. */
  private received(n: number): boolean {
    if (this.state === 'body') {
      this.filled += n;
      this.left -= n;
      return this.pushFilled();
    }
    if (this.state !== 'head') {
      // Bytes with no request out: whatever speaks there, it is not answering us.
      this.fail(connectionError('EPROTO'));
      return false;
    }
    const from = Math.max(0, this.headLength - HEAD_END.length + 1);
    this.headLength += n;
    const end = this.head.subarray(0, this.headLength).indexOf(HEAD_END, from);
    if (end < 0) {
      if (this.headLength < HEAD_ROOM) return true;
      this.decline();
      return false;
    }
    const parsed = parseHead(this.head.toString('latin1', 0, end));
    // 1xx, 204 and 304 answers have no body whatever their headers say: not expected here.
    const bodied =
      parsed !== undefined && parsed.status >= 200 && parsed.status !== 204 && parsed.status !== 304;
    const size = bodied ? contentLength(parsed.headers) : undefined;
    const start = end + HEAD_END.length;
    if (parsed === undefined || size === undefined || this.headLength - start > size) {
      this.decline();
      return false;
    }
    if (!parsed.keepAlive) this.reusable = false;
    this.state = 'body';
    this.paused = false;
    // A body's stream outlives its request (it is destroyed a tick after its end, when the
    // connection may carry the next one): what it asks is heard only while it is the one read.
    const body: BodyStream = new BodyStream(
      () => {
        if (this.body === body) this.resume();
      },
      (err) => {
        if (this.body === body) this.letGo(err);
      },
    );
    this.body = body;
    this.left = size;
    this.newChunk();
    this.filled = this.head.copy(this.chunk, 0, start, this.headLength);
    this.left -= this.filled;
    const resolve = this.answered;
    this.answered = undefined;
    this.failed = undefined;
    resolve?.({ status: parsed.status, headers: parsed.headers, body, recycle: this.owner.recycle });
    return this.pushFilled();
  }

  /** Hands a filled buffer to the body's reader; ends the body and the request once all is read. */
  private pushFilled(): boolean {
    const body = this.body;
    if (body === undefined) return false;
    let more = true;
    if (this.filled === this.chunk.length) {
      if (this.chunk.length > 0) more = body.push(this.chunk);
      // A reader that let go of the body as it took this chunk has ended the request already.
      if (this.body !== body) return false;
      this.newChunk();
    }
    if (this.left > 0) {
      this.paused = !more;
      return more;
    }
    this.body = undefined;
    this.chunk = Buffer.alloc(0);
    // The next read goes where nextBuffer says now: the next answer's head starts at 0.
    this.headLength = 0;
    this.state = this.reusable ? 'idle' : 'closed';
    if (this.reusable) {
      // An idle connection does not keep the process alive, as node:http's do not.
      this.socket.unref();
      this.socket.setTimeout(this.options.idleMs);
    }
    this.endRequest();
    body.push(null);
    return true;
  }

  private newChunk(): void {
    this.chunk = this.left > 0 ? this.owner.chunk(Math.min(BODY_CHUNK, this.left)) : Buffer.alloc(0);
    this.filled = 0;
  }

  private resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.socket.resume();
  }

  /** An answer not read here: the connection is dropped, and the caller asks another way. */
  private decline(): void {
    const resolve = this.answered;
    this.answered = undefined;
    this.failed = undefined;
    this.close();
    resolve?.(undefined);
  }

  private timedOut(): void {
    if (this.state === 'idle') {
      this.close();
      return;
    }
    if (this.paused) {
      // The body's reader is what waits, with bytes it has not taken: not the server's silence.
      this.socket.setTimeout(this.options.timeoutMs);
      return;
    }
    const seconds = this.options.timeoutMs / 1000;
    this.fail(
      new S3Error(0, 'RequestTimeout', `GET ${this.options.name}: nothing sent or received for ${seconds} s`),
    );
  }

  /** The reader let go of the body before its end: the rest of it is not read. */
  private letGo(err: Error | null): void {
    this.fail(err ?? connectionError('ECONNRESET'));
  }

  /** Ends the connection with err: the awaited answer rejects, or the body being read fails. */
  private fail(err: Error): void {
    const reject = this.failed;
    const body = this.body;
    this.answered = undefined;
    this.failed = undefined;
    this.body = undefined;
    this.close();
    if (reject) reject(err);
    // As node:http does, a body nobody listens to for errors ends without one, not by crashing.
    else body?.destroy(body.listenerCount('error') > 0 ? err : undefined);
  }

  /** Closes the connection and ends its request, if one is out (once). */
  private close(): void {
    if (this.state === 'closed') return;
    this.reusable = false;
    const busy = this.state !== 'idle';
    this.state = 'closed';
    this.socket.destroy();
    this.owner.closed(this);
    if (busy) this.endRequest();
  }

  private endRequest(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.signal = undefined;
    this.owner.requestOver(this);
  }
}

/** A body fed by its connection: reading on asks the connection to read on. */
class BodyStream extends Readable {
  private readonly wantMore: () => void;
  private readonly letGo: (err: Error | null) => void;

  constructor(wantMore: () => void, letGo: (err: Error | null) => void) {
    // Two chunks may wait for the reader before the socket stops being read. Object mode hands
    // them over one by one: a plain stream's read() joins the chunks waiting into a new buffer.
    super({ objectMode: true, highWaterMark: 2 });
    this.wantMore = wantMore;
    this.letGo = letGo;
  }

  override _read(): void {
    this.wantMore();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.letGo(err);
    callback(err);
  }
}

/** An answer's status and headers (names lowercased, repeated ones joined by ", "); undefined if malformed. */
function parseHead(
  text: string,
): { status: number; keepAlive: boolean; headers: Record<string, string> } | undefined {
  const lines = text.split('\r\n');
  const status = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(lines[0] ?? '');
  if (!status) return undefined;
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) return undefined;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const connection = headers['connection']?.toLowerCase();
  const keepAlive = status[1] === '1' ? connection !== 'close' : connection === 'keep-alive';
  return { status: Number(status[2]), keepAlive, headers };
}

/** The body's length for an answer that has one and is not chunked. */
function contentLength(headers: Record<string, string>): number | undefined {
  if (headers['transfer-encoding'] !== undefined) return undefined;
  const value = headers['content-length'];
  return value !== undefined && /^\d{1,15}$/.test(value) ? Number(value) : undefined;
}

/** A connection failure as the rest of the client names it: an Error with the errno code. */
function connectionError(code: string, cause?: Error): Error {
  return Object.assign(new Error(code, cause && { cause }), { code });
}
