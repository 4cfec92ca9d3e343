// Runs the action as a child process in its own process group, streams its output line by
// line to the log as it comes, and can end its whole process tree: SIGTERM to the group and to
// every descendant found in /proc (children that left the group), then SIGKILL after the grace
// period. Nothing the script started may outlive a stop.

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'

export interface ScriptResult {
  readonly exitCode: number | null
  readonly signal: NodeJS.Signals | null
  readonly durationMs: number
  /** True when the run was ended by stop() rather than by itself. */
  readonly stopped: boolean
}

export interface RunningScript {
  readonly done: Promise<ScriptResult>
  /** Ends the whole tree (SIGTERM, then SIGKILL after graceMs) and waits for the script. */
  stop (graceMs: number): Promise<ScriptResult>
}

export interface ScriptLog {
  line (stream: 'stdout' | 'stderr', text: string): void
}

/** Every live descendant of pid, read from /proc (parent links), deepest last. */
export async function descendants (pid: number): Promise<number[]> {
  const parents = new Map<number, number[]>()
  let entries: string[]
  try {
    entries = await readdir('/proc')
  } catch {
    return []
  }
  await Promise.all(entries.filter((e) => /^\d+$/.test(e)).map(async (e) => {
    try {
      const stat = await readFile(`/proc/${e}/stat`, 'utf8')
      // Field 4 (ppid) follows the command name in parentheses, which may itself hold spaces.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      const list = parents.get(ppid) ?? []
      list.push(Number(e))
      parents.set(ppid, list)
    } catch { /* the process ended while we looked */ }
  }))
  const out: number[] = []
  const queue = [pid]
  while (queue.length > 0) {
    const next = queue.shift()
    if (next === undefined) break
    for (const child of parents.get(next) ?? []) {
      out.push(child)
      queue.push(child)
    }
  }
  return out
}

function signal (pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch { /* already gone */ }
}

/** Whether pid still runs; a zombie (exited, waiting to be reaped) counts as gone. */
function alive (pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

function pipeLines (stream: Readable | null, name: 'stdout' | 'stderr', log: ScriptLog): Promise<void> {
  if (stream === null) return Promise.resolve()
  const lines = createInterface({ input: stream, crlfDelay: Infinity })
  lines.on('line', (text) => { log.line(name, text) })
  return new Promise((resolve) => {
    lines.once('close', resolve)
    stream.once('error', () => resolve())
  })
}

export function runScript (file: string, args: readonly string[], env: NodeJS.ProcessEnv, log: ScriptLog): RunningScript {
  const started = Date.now()
  const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let stopped = false
  const output = Promise.all([pipeLines(child.stdout, 'stdout', log), pipeLines(child.stderr, 'stderr', log)])

  const done = new Promise<ScriptResult>((resolve) => {
    let settled = false
    const finish = (exitCode: number | null, sig: NodeJS.Signals | null): void => {
      if (settled) return
      settled = true
      // Give the last lines a moment; a background child holding the pipes must not hold us.
      const drained = new Promise<void>((resolve) => { setTimeout(resolve, 500).unref() })
      Promise.race([output, drained]).then(() => {
        child.stdout?.destroy()
        child.stderr?.destroy()
        resolve({ exitCode, signal: sig, durationMs: Date.now() - started, stopped })
      })
    }
    child.once('exit', finish)
    child.once('error', (err) => {
      log.line('stderr', `cannot start ${file}: ${err.message}`)
      finish(127, null)
    })
  })

  return {
    done,
    async stop (graceMs) {
      stopped = true
      const pid = child.pid
      if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return done
      const tree = [pid, ...await descendants(pid)]
      signal(-pid, 'SIGTERM')
      for (const p of tree) signal(p, 'SIGTERM')
      // Wait for the whole tree (not just the script) up to the grace period, then SIGKILL the rest.
      const deadline = Date.now() + graceMs
      while (Date.now() < deadline && tree.some(alive)) {
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      const late = await descendants(pid)
      signal(-pid, 'SIGKILL')
      for (const p of new Set([...tree, ...late])) if (alive(p)) signal(p, 'SIGKILL')
      return await done
    }
  }
}
