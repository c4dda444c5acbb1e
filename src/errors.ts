// One error class with a closed set of codes; expected failures carry a message fit for an operator.

/** Stable error codes callers may branch on. */
export type ErrorCode =
  | 'ERR_CONFIG'
  | 'ERR_USAGE'
  | 'ERR_NOT_FOUND'
  | 'ERR_INTEGRITY'
  | 'ERR_SOURCE'
  | 'ERR_TARGET'
  | 'ERR_GATEWAY'
  | 'ERR_ETCD'
  | 'ERR_SSH'
  | 'ERR_LOCKED'
  | 'ERR_ABORTED';

/** An expected failure: its message names what failed, where, and how to fix it; it never holds a secret. */
export class BackupError extends Error {
  override name = 'BackupError';
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
  }
}

/** Coerces any thrown value into an Error. */
export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === 'string' ? value : JSON.stringify(value));
}

/** The message of an error and its chain of causes, joined with ": ", each part once. */
export function describeError(value: unknown): string {
  const parts: string[] = [];
  let current: unknown = value;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    const err = toError(current);
    const code = (err as { code?: unknown }).code;
    const text = err.message || (typeof code === 'string' ? code : err.name);
    if (text && !parts.some((p) => p.includes(text))) parts.push(text);
    current = err.cause;
  }
  return parts.join(': ');
}

/** True when the value is an abort (AbortSignal fired or ERR_ABORTED). */
export function isAbort(value: unknown): boolean {
  if (value instanceof BackupError) return value.code === 'ERR_ABORTED';
  return value instanceof Error && (value.name === 'AbortError' || value.name === 'TimeoutError');
}
