// What a restore tells as it goes: each step's start and end, progress (objects, bytes, rate, ETA)
// as a redrawn line on a terminal and as JSON lines otherwise, and the plan or result at the end.

/** The steps of a restore, in the order they run. */
export type StepName = 'preflight' | 'buckets' | 'volume' | 'database' | 'finish';

/** Counts of one step (or one bucket); the plan and the run fill the same fields. */
export interface StepCounts {
  /** Items the restore point holds for this step (objects, archive entries, 1 dump). */
  objects: number;
  bytes: number;
  /** Items written that did not exist. */
  create: number;
  /** Items already present and identical. */
  skip: number;
  /** Items present but different, replaced (with --overwrite). */
  overwrite: number;
  /** Items present but different, left alone (no --overwrite). */
  conflict: number;
  /** Bytes sent to the destination (planned or done). */
  transferBytes: number;
  /** Items that could not be restored. */
  failed: number;
}

/** Zero counts. */
export function emptyStepCounts(): StepCounts {
  return { objects: 0, bytes: 0, create: 0, skip: 0, overwrite: 0, conflict: 0, transferBytes: 0, failed: 0 };
}

/** Receives progress events. */
export interface Reporter {
  started(step: StepName, detail: string): void;
  finished(step: StepName, status: string, detail: string): void;
  /** Called as work advances; the reporter decides how often to show it. */
  progress(
    step: StepName,
    done: { objects: number; bytes: number },
    total: { objects: number; bytes: number },
  ): void;
  warn(message: string): void;
}

/** A reporter writing to a stream: human lines on a terminal, JSON lines otherwise. */
export function createReporter(
  out: { write(text: string): void; isTTY?: boolean },
  now: () => number = Date.now,
): Reporter {
  const tty = out.isTTY === true;
  const startedAt = new Map<StepName, number>();
  let lastShown = 0;
  let pending = false;
  const line = (event: Record<string, unknown>, text: string): void => {
    if (tty) out.write(`${pending ? '\n' : ''}${text}\n`);
    else out.write(`${JSON.stringify(event)}\n`);
    pending = false;
  };
  return {
    started(step, detail) {
      startedAt.set(step, now());
      line({ event: 'step-started', step, detail }, `${step}: started ${detail}`.trimEnd());
    },
    finished(step, status, detail) {
      const ms = now() - (startedAt.get(step) ?? now());
      line(
        { event: 'step-finished', step, status, detail, durationMs: ms },
        `${step}: ${status} ${detail} (${(ms / 1000).toFixed(1)} s)`,
      );
    },
    progress(step, done, total) {
      const t = now();
      const final = done.objects >= total.objects && done.bytes >= total.bytes;
      if (!final && t - lastShown < (tty ? 200 : 2000)) return;
      lastShown = t;
      const elapsed = Math.max(1, t - (startedAt.get(step) ?? t)) / 1000;
      const rate = done.bytes / elapsed;
      const eta = rate > 0 ? Math.max(0, (total.bytes - done.bytes) / rate) : undefined;
      if (tty) {
        const mib = (n: number) => (n / 1048576).toFixed(1);
        out.write(
          `\r${step}: ${done.objects}/${total.objects} objects, ${mib(done.bytes)}/${mib(total.bytes)} MiB, ${mib(rate)} MiB/s, ETA ${eta === undefined ? '?' : `${Math.ceil(eta)} s`}   `,
        );
        pending = true;
      } else {
        out.write(
          `${JSON.stringify({ event: 'progress', step, objects: done.objects, totalObjects: total.objects, bytes: done.bytes, totalBytes: total.bytes, bytesPerSecond: Math.round(rate), etaSeconds: eta === undefined ? null : Math.ceil(eta) })}\n`,
        );
      }
    },
    warn(message) {
      line({ event: 'warning', message }, `warning: ${message}`);
    },
  };
}
