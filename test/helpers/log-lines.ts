// Waits for a JSON log line of a child process (pkg-serve, or the image's container) that the
// caller collects into `logs`, waking `waiters` on every new line and on exit.

import type { ChildProcess } from 'node:child_process'

export type LogLine = Record<string, unknown>

export interface LogSource {
  readonly child: ChildProcess
  readonly logs: LogLine[]
  readonly waiters: Set<() => void>
  /** Names the process in errors ("pkg-serve", "the container"). */
  readonly who: string
  /** What to show of it when the line does not come. */
  readonly context: () => string
  /** Whether no more lines can come (default: the process exited; its pipes may still hold some). */
  readonly ended?: () => boolean
}

export function waitForLine (source: LogSource, predicate: (line: LogLine) => boolean, timeoutMs: number): Promise<LogLine> {
  const { child, logs, waiters, who, context } = source
  const ended = source.ended ?? ((): boolean => child.exitCode !== null || child.signalCode !== null)
  return new Promise((resolve, reject) => {
    const check = (): void => {
      const found = logs.find(predicate)
      if (found !== undefined) { cleanup(); resolve(found); return }
      if (ended()) {
        cleanup()
        reject(new Error(`${who} exited (${child.exitCode ?? child.signalCode ?? ''}) before the expected log line; ${context()}`))
      }
    }
    const timer = setTimeout(() => { cleanup(); reject(new Error(`no expected log line in ${timeoutMs} ms; ${context()}`)) }, timeoutMs)
    const cleanup = (): void => { clearTimeout(timer); waiters.delete(check) }
    waiters.add(check)
    check()
  })
}
