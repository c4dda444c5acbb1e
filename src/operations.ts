// One operation at a time: scheduled and requested backups and restores share one slot. Each
// operation has an id, a status, progress, a result, and its own AbortController.
import { randomBytes } from 'node:crypto';
import { describeError, isAbort } from './errors.js';

/** What the daemon does. */
export type OperationKind = 'backup' | 'restore' | 'verify' | 'drill';

/** A snapshot of an operation, as the HTTP API shows it. */
export interface OperationView {
  id: string;
  kind: OperationKind;
  trigger: string;
  status: 'running' | 'success' | 'partial' | 'failed' | 'aborted' | 'skipped';
  startedAt: string;
  finishedAt?: string;
  progress?: unknown;
  result?: unknown;
  error?: string;
}

interface Operation extends OperationView {
  controller: AbortController;
  done: Promise<void>;
}

/** The outcome an operation's work reports. */
export interface WorkOutcome {
  /** skipped: another deis-backup in the cluster held the lock, nothing ran. */
  status: 'success' | 'partial' | 'failed' | 'aborted' | 'skipped';
  result: unknown;
}

/** The single slot, and the last few operations for lookups. */
export class Operations {
  private running: Operation | undefined;
  private readonly history = new Map<string, Operation>();
  private readonly keep: number;
  private readonly shutdown: AbortSignal;

  constructor(shutdown: AbortSignal, keep = 50) {
    this.shutdown = shutdown;
    this.keep = keep;
  }

  /** The operation in flight, if any. */
  current(): OperationView | undefined {
    return this.running && view(this.running);
  }

  /**
   * Starts `work` unless another operation runs; then nothing starts and the running one is returned
   * as `busy`. `work` gets the operation's signal and a setter for its progress.
   */
  start(
    kind: OperationKind,
    trigger: string,
    work: (signal: AbortSignal, progress: (value: unknown) => void, id: string) => Promise<WorkOutcome>,
  ): { started: OperationView } | { busy: OperationView } {
    if (this.running) return { busy: view(this.running) };
    if (this.shutdown.aborted) {
      throw Object.assign(new Error('the daemon is shutting down; try again when it is back'), {
        statusCode: 503,
      });
    }
    // The shutdown aborts the operation through a listener removed when it ends. Not AbortSignal.any:
    // on Node 20 every join, including each later one of the operation's signal, leaves an entry on
    // the daemon-long shutdown signal that is never removed (5 per backup in a soak test).
    const controller = new AbortController();
    const signal = controller.signal;
    const onShutdown = (): void => {
      controller.abort(this.shutdown.reason);
    };
    this.shutdown.addEventListener('abort', onShutdown, { once: true });
    const op: Operation = {
      id: `${kind}-${new Date().toISOString().replace(/[-:.]/g, '').slice(0, 15)}-${randomBytes(3).toString('hex')}`,
      kind,
      trigger,
      status: 'running',
      startedAt: new Date().toISOString(),
      controller,
      done: Promise.resolve(),
    };
    op.done = (async () => {
      try {
        const outcome = await work(
          signal,
          (value) => {
            op.progress = value;
          },
          op.id,
        );
        op.status = outcome.status;
        op.result = outcome.result;
      } catch (err) {
        op.status = signal.aborted || isAbort(err) ? 'aborted' : 'failed';
        op.error = describeError(err);
      } finally {
        this.shutdown.removeEventListener('abort', onShutdown);
        op.finishedAt = new Date().toISOString();
        this.running = undefined;
      }
    })();
    this.running = op;
    this.history.set(op.id, op);
    for (const id of this.history.keys()) {
      if (this.history.size <= this.keep) break;
      if (this.history.get(id) !== this.running) this.history.delete(id);
    }
    return { started: view(op) };
  }

  /** An operation by id, running or recent. */
  get(id: string): OperationView | undefined {
    const op = this.history.get(id);
    return op && view(op);
  }

  /** Aborts an operation; false when it is unknown or already finished. */
  cancel(id: string): boolean {
    const op = this.history.get(id);
    if (op?.status !== 'running') return false;
    op.controller.abort(new Error('cancelled'));
    return true;
  }

  /** Resolves when nothing runs (or after `ms`); true when idle. */
  async idle(ms: number): Promise<boolean> {
    const op = this.running;
    if (!op) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => {
        resolve(false);
      }, ms);
    });
    const finished = await Promise.race([op.done.then(() => true), timeout]);
    clearTimeout(timer);
    return finished;
  }
}

function view(op: Operation): OperationView {
  return {
    id: op.id,
    kind: op.kind,
    trigger: op.trigger,
    status: op.status,
    startedAt: op.startedAt,
    ...(op.finishedAt === undefined ? {} : { finishedAt: op.finishedAt }),
    ...(op.progress === undefined ? {} : { progress: op.progress }),
    ...(op.result === undefined ? {} : { result: op.result }),
    ...(op.error === undefined ? {} : { error: op.error }),
  };
}
