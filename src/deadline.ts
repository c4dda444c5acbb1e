// A signal with a time limit that holds. AbortSignal.any refers to the signals it joins only weakly,
// so on Node 20 an AbortSignal.timeout() that nothing else refers to can be collected before it
// fires, and the joined signal then never aborts (seen: a 30 s limit that waited 120 s).

/**
 * Aborts when `signal` does (if given) or once `ms` have passed (a TimeoutError); dispose stops the
 * timer. Without `signal` nothing is joined: a long-lived signal would gather one entry per join.
 */
export function withDeadline(
  signal: AbortSignal | undefined,
  ms: number,
): { signal: AbortSignal; dispose: () => void } {
  const deadline = new AbortController();
  // The timer's callback holds the controller, and so its signal, until it fires or is cleared.
  const timer = setTimeout(() => {
    deadline.abort(new DOMException(`no answer within ${ms / 1000} s`, 'TimeoutError'));
  }, ms);
  return {
    signal: signal === undefined ? deadline.signal : AbortSignal.any([signal, deadline.signal]),
    dispose: () => {
      clearTimeout(timer);
    },
  };
}
