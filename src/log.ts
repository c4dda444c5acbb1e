// Root pino logger with redaction; loggers are passed down as children, never imported as singletons.
import { pino, type DestinationStream } from 'pino';
import type { Logger } from './logger.js';

export type { Logger };

/** Paths whose values never reach a log line, whatever object they sit in. */
export const redactPaths = [
  '*.secretKey',
  '*.accessKey',
  '*.password',
  '*.authorization',
  '*.*.secretKey',
  '*.*.accessKey',
  'headers.authorization',
  'config.gateway.secretKey',
  'config.target.secretKey',
];

/** Creates the root logger; JSON lines on the given stream (stderr by default). */
export function createLogger(
  options: { level: string },
  destination: DestinationStream = pino.destination(2),
): Logger {
  return pino(
    {
      level: options.level,
      redact: { paths: redactPaths, censor: '**redacted**' },
      base: { pid: process.pid },
    },
    destination,
  );
}
