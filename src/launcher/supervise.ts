// Runs the action as a child process, streams its output to the log line by line as it comes
// (bounded: see output.ts), and ends everything it started: on a stop, and when the script
// exits and leaves processes behind. With a run cgroup (cgroup.ts) "everything" is the cgroup,
// which daemons cannot leave; without one (no cgroup v2) it is the script's process group and
// the descendants found in /proc, which a double fork escapes (the log says so at start).
// Nothing the script started may outlive its run.

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { cgroupPids, describe, populated, stopCgroup } from './cgroup.ts'
import { forEachLine } from './output.ts'
import { messageOf } from '../lib/errors.ts'

export interface ScriptResult {
  readonly exitCode: number | null
  readonly signal: NodeJS.Signals | null
  readonly durationMs: number
  /** True when the run was ended by stop() rather than by itself. */
  readonly stopped: boolean
}

export interface RunningScript {
  readonly pid: number | undefined
  readonly done: Promise<ScriptResult>
  /** Ends everything the script started (SIGTERM, then SIGKILL after graceMs) and waits for it. */
  stop (graceMs: number): Promise<ScriptResult>
}

export interface ScriptLog {
  /** A line of output, or a piece of a long one (`continues`); may return a promise to slow the reader. */
  line (stream: 'stdout' | 'stderr', text: string, continues: boolean): void | Promise<void>
  /** Something the supervisor did that the operator should know (leftover processes ended). */
  warn (fields: Record<string, unknown>, message: string): void
}

export interface RunOptions {
  /** The run's cgroup directory (the command joins it itself); undefined: the process-tree fallback. */
  readonly cgroup?: string
  /** Grace period between SIGTERM and SIGKILL for what the script leaves behind when it exits. */
  readonly graceMs: number
}

/** How long the output may stay silent after the script ended before its pipes are closed. */
const DRAIN_IDLE_MS = 500

/**
 * The fields of a /proc/PID/stat line after the command name (state, ppid, pgrp, ...): the name,
 * in parentheses, may itself hold spaces and parentheses.
 */
function statFields (stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

/** pid's stat fields (statFields), or undefined once it is gone. */
export function statOf (pid: number): string[] | undefined {
  try {
    return statFields(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return undefined
  }
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
      const ppid = Number(statFields(await readFile(`/proc/${e}/stat`, 'utf8'))[1])
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
export function alive (pid: number): boolean {
  const state = statOf(pid)?.[0]
  return state !== undefined && state !== 'Z'
}

/** The process group of pid, or undefined once it is gone. */
function groupOf (pid: number): number | undefined {
  const pgrp = statOf(pid)?.[2]
  return pgrp === undefined ? undefined : Number(pgrp)
}

/** Ends pid's process group and the descendants /proc still links to it (the fallback). */
async function stopTree (pid: number, graceMs: number): Promise<void> {
  const tree = [pid, ...await descendants(pid)]
  signal(-pid, 'SIGTERM')
  // The rest of the tree (those that left the group): the group's members have had theirs.
  for (const p of tree) if (groupOf(p) !== pid) signal(p, 'SIGTERM')
  const deadline = Date.now() + graceMs
  while (Date.now() < deadline && tree.some(alive)) await sleep(50)
  const late = await descendants(pid)
  signal(-pid, 'SIGKILL')
  for (const p of new Set([...tree, ...late])) if (alive(p)) signal(p, 'SIGKILL')
}

/** Whether any process of the group still runs (the group's leader may be gone). */
function groupAlive (pgid: number): boolean {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

export function runScript (file: string, args: readonly string[], env: NodeJS.ProcessEnv, log: ScriptLog, opts: RunOptions): RunningScript {
  const started = Date.now()
  // Its own process group: the fallback's handle, and in node mode nsenter's, before the shim joins.
  const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  const { cgroup } = opts
  let stopped = false
  let stopping: Promise<void> | undefined
  let lastOutput = Date.now()
  const read = (stream: Readable | null, name: 'stdout' | 'stderr'): Promise<void> => {
    if (stream === null) return Promise.resolve()
    return forEachLine(stream, async (text, continues) => {
      lastOutput = Date.now()
      // A line the log cannot take is dropped, never the pipe: a script blocked on a full pipe
      // would hang its run.
      try {
        await log.line(name, text, continues)
      } catch { /* dropped */ }
    }).catch(() => { /* destroyed after the run: what was read is logged */ })
  }
  const output = Promise.all([read(child.stdout, 'stdout'), read(child.stderr, 'stderr')])

  /** Ends the run's processes: the cgroup's, or the group and tree (fallback). */
  const end = (graceMs: number): Promise<void> => {
    stopping ??= (async () => {
      const pid = child.pid
      if (cgroup !== undefined) {
        // Not the group first as well: its members are in the cgroup too, and a second SIGTERM
        // runs a script's TERM trap a second time.
        await stopCgroup(cgroup, graceMs)
        // nsenter (which ends with its child) and, in node mode, its child before the shim
        // joined: in the group, not the cgroup.
        if (pid !== undefined && groupAlive(pid)) await stopTree(pid, graceMs)
      } else if (pid !== undefined) {
        await stopTree(pid, graceMs)
      }
    })()
    return stopping
  }

  /** After the script exited: end what it left running (a cgroup that is still populated). */
  const endLeftovers = async (): Promise<void> => {
    const pid = child.pid
    const left = cgroup !== undefined
      ? (await populated(cgroup) ? await cgroupPids(cgroup) : [])
      : (pid !== undefined && groupAlive(pid) ? [pid] : [])
    if (left.length === 0 && cgroup !== undefined) {
      await stopCgroup(cgroup, 0) // empty: just removes it
      return
    }
    if (left.length === 0) return
    log.warn({ processes: cgroup !== undefined ? await describe(left) : undefined },
      cgroup !== undefined
        ? `the script exited and left ${left.length} process(es) running in its cgroup: stopping them (start services through the node's init, e.g. systemctl, to keep them)`
        : 'the script exited and left processes running in its process group: stopping them')
    await end(opts.graceMs)
  }

  const done = new Promise<ScriptResult>((resolve) => {
    let settled = false
    const finish = (exitCode: number | null, sig: NodeJS.Signals | null): void => {
      if (settled) return
      settled = true
      const durationMs = Date.now() - started
      ;(async () => {
        await (stopping ?? endLeftovers()).catch((err: unknown) => {
          log.warn({ err }, `could not end what the script left running: ${messageOf(err)}`)
        })
        // Read what is still in the pipes; stop once nothing came for a while (a process outside
        // the cgroup that holds them, say one the fallback could not find, must not hold us).
        while (await Promise.race([output.then(() => true), sleep(DRAIN_IDLE_MS, false)]) === false) {
          if (Date.now() - lastOutput >= DRAIN_IDLE_MS) break
        }
        child.stdout?.destroy()
        child.stderr?.destroy()
        await output
        resolve({ exitCode, signal: sig, durationMs, stopped })
      })().catch(() => { resolve({ exitCode, signal: sig, durationMs, stopped }) })
    }
    child.once('exit', finish)
    child.once('error', (err) => {
      Promise.resolve(log.line('stderr', `cannot start ${file}: ${err.message}`, false)).catch(() => {})
      finish(127, null)
    })
  })

  return {
    pid: child.pid,
    done,
    async stop (graceMs) {
      stopped = true
      await end(graceMs)
      return done
    }
  }
}
