// The logging calls the code makes, and the logger that drops them. A command that logs nothing
// (the CLI without --verbose) uses silentLogger and never loads pino, about 20 ms of every start.

/** One level's log call, as pino takes it: fields then a message, or a message alone. */
export interface LogFn {
  (fields: object, message?: string): void;
  (message: string): void;
}

/** What the code logs through; a pino logger (see log.ts) is one. */
export interface Logger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  child(bindings: Record<string, unknown>): Logger;
}

const drop = (): void => undefined;

/** A logger that writes nothing. */
export const silentLogger: Logger = {
  debug: drop,
  info: drop,
  warn: drop,
  error: drop,
  child: () => silentLogger,
};
