// Runs the real pkg-serve command line as a child process, the way users and the image do.

import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { TestContext } from 'node:test'
import { waitForLine } from './log-lines.ts'

export const REPO = fileURLToPath(new URL('../..', import.meta.url))
const CLI = fileURLToPath(new URL('../../src/cli.ts', import.meta.url))
/** Node with built-in type stripping runs the sources as they are; Node 20 needs tsx. */
export const NODE_ARGS: readonly string[] = (process.features as { typescript?: string | false }).typescript ? [] : ['--import', 'tsx']

export function cliArgs (args: readonly string[]): string[] {
  return [...NODE_ARGS, CLI, ...args]
}

export interface CliResult { readonly status: number | null, readonly stdout: string, readonly stderr: string }

/** Runs a command to completion. */
export function runCli (args: readonly string[], env: Record<string, string | undefined> = {}): CliResult {
  const r = spawnSync(process.execPath, cliArgs(args), { cwd: REPO, env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

/**
 * Runs a command in this process through the same main() as the bin, with its own env and
 * output buffers: for commands that end by themselves (errors, validate, publish), without the
 * cost of a process. An unexpected error is reported as the bin would (one line, exit 1).
 */
export async function runCliInProcess (args: readonly string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  const { main } = await import('../../src/cli/program.ts')
  let stdout = ''
  let stderr = ''
  const io = { out: (s: string) => { stdout += s }, err: (s: string) => { stderr += s } }
  const status = await main(['node', 'pkg-serve', ...args], { ...process.env, ...env }, io).catch((err: unknown) => {
    stderr += `pkg-serve: ${err instanceof Error ? err.message : String(err)}\n`
    return 1
  })
  return { status, stdout, stderr }
}

export interface RunningCli {
  readonly child: ChildProcess
  /** Every JSON log line so far. */
  readonly logs: Array<Record<string, unknown>>
  readonly stderr: () => string
  /** Lines that keepLine did not keep. */
  dropped: number
  waitForLog (predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>
  exited (): Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  stop (): Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

export interface StartOptions {
  /** A command that execs its arguments (say, one that joins a cgroup first); the pid stays pkg-serve's when it execs. */
  readonly prefix?: readonly string[]
  /** False: the line is not kept in `logs` (only counted in `dropped`): a test that logs gigabytes. */
  readonly keepLine?: (raw: string) => boolean
}

/** Starts a long-running command (serve, run) and collects its JSON log lines. */
export function startCli (t: TestContext, args: readonly string[], env: Record<string, string | undefined> = {}, options: StartOptions = {}): RunningCli {
  const [file = process.execPath, ...prefixArgs] = options.prefix ?? []
  const argv = options.prefix === undefined ? cliArgs(args) : [...prefixArgs, process.execPath, ...cliArgs(args)]
  const child = spawn(file, argv, { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const logs: Array<Record<string, unknown>> = []
  const waiters = new Set<() => void>()
  let buffered = ''
  let stderr = ''
  /** Exited, and its output read to the end. */
  let closed = false
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk
    let nl
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      if (options.keepLine?.(line) === false) {
        running.dropped++
        continue
      }
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        logs.push({ msg: line, raw: true })
      }
    }
    for (const w of waiters) w()
  })
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exit = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      // Its last lines may still be in the pipes: wait for them to close (2 s at most, in case a
      // process it left behind holds them open; then they are closed here).
      const done = (): void => {
        clearTimeout(timer)
        closed = true
        child.stdout?.destroy()
        child.stderr?.destroy()
        for (const w of waiters) w()
        resolve({ code, signal })
      }
      const timer = setTimeout(done, 2000)
      child.once('close', done)
    })
  })

  const running: RunningCli = {
    child,
    logs,
    stderr: () => stderr,
    dropped: 0,
    waitForLog (predicate, timeoutMs = 30_000) {
      return waitForLine({ child, logs, waiters, who: 'pkg-serve', context: () => `stderr: ${stderr}; logs: ${JSON.stringify(logs.slice(-5))}`, ended: () => closed }, predicate, timeoutMs)
    },
    exited: () => exit,
    async stop () {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
        const result = await exit
        clearTimeout(timer)
        return result
      }
      return exit
    }
  }
  t.after(() => running.stop())
  return running
}
