// The process logger: JSON lines on stdout (what kubectl logs and log shippers read).
// Secrets never reach it: request logs carry no headers, and storage descriptions are built
// without keys, SAS signatures or tokens; the redaction list is a second line of defence.

import { pino } from 'pino'
import type { Logger } from 'pino'

export function createLogger (level: string): Logger {
  return pino({
    level,
    base: { name: 'pkg-serve' },
    redact: {
      paths: ['req.headers.authorization', 'headers.authorization', '*.connectionString', '*.accountKey', '*.sasToken'],
      censor: '[redacted]'
    }
    // Synchronous writes: a log reader that falls behind slows the writer instead of growing an
    // in-memory queue (the launcher logs whatever a script prints; memory must not follow it).
  }, pino.destination({ dest: 1, sync: true }))
}
