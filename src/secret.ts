// A string that never prints: logs, JSON and inspect all show **redacted**.
import { inspect } from 'node:util';

const REDACTED = '**redacted**';

/** Holds a credential; only `reveal()` gives the value, for the one call that needs it. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  /** The secret itself. Never log or print the result. */
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return REDACTED;
  }
  toJSON(): string {
    return REDACTED;
  }
  [inspect.custom](): string {
    return REDACTED;
  }
}
