// The launcher's state on disk: status.json (for humans and tools) and the `ready` file the
// DaemonSet's readiness probe tests, both in --state-dir; and, in the host dir, the --once
// records and a copy of each action's last status (the run record), which outlive the
// container and the pod. Every write is atomic (temp file + rename): a probe or a reader never
// sees half a file. The status names the run's cgroup while it runs, so that a launcher starting
// after a crash can find and end what the earlier one left (see launcher.ts): the run record is
// what it finds after a container restart, when --state-dir (in the container) starts empty.

import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readFile, rename, rm, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { statOf } from './supervise.ts'
import { UserError, messageOf } from '../lib/errors.ts'

export type Phase = 'starting' | 'running' | 'succeeded' | 'failed' | 'retrying' | 'skipped' | 'stopped'

export interface Status {
  readonly phase: Phase
  readonly action: string
  readonly args: readonly string[]
  readonly scriptSha256?: string
  readonly attempts: number
  readonly exitCode?: number | null
  readonly signal?: string | null
  readonly port?: number | null
  readonly startedAt?: string | null
  readonly finishedAt?: string | null
  readonly durationMs?: number | null
  readonly nextAttemptAt?: string | null
  readonly message?: string
  /** The run's cgroup directory while it runs (null: none, the process-tree fallback). */
  readonly cgroup?: string | null
  /** Set when this launcher found an earlier launcher's run unfinished (a crash, an OOM kill). */
  readonly recovered?: Recovered
  /** The launcher that wrote this (with hostPID, its PID on the node), to tell a dead one from a live one. */
  readonly launcher?: LauncherProcess
  readonly updatedAt: string
}

export interface LauncherProcess {
  readonly pid: number
  /** When it started, in clock ticks since boot (/proc/PID/stat): a reused PID has another. */
  readonly startTicks: number
}

/** A process's start time in clock ticks since boot (stat field 22); undefined when it does not exist. */
export function startTicks (pid: number): number | undefined {
  const ticks = Number(statOf(pid)?.[19])
  return Number.isFinite(ticks) ? ticks : undefined
}

/** This process, as a status names its writer. */
export function thisLauncher (): LauncherProcess | undefined {
  const ticks = startTicks(process.pid)
  return ticks === undefined ? undefined : { pid: process.pid, startTicks: ticks }
}

/** Whether the launcher that wrote a status still runs (another one: not an earlier run). */
export function stillRunning (writer: LauncherProcess | undefined): boolean {
  if (typeof writer?.pid !== 'number' || writer.pid === process.pid) return false
  return startTicks(writer.pid) === writer.startTicks
}

export interface Recovered {
  readonly at: string
  /** The earlier launcher's last status (without its own `recovered`). */
  readonly previous: Omit<Status, 'recovered'> | null
  /** Processes of the earlier run that were still running, and were stopped. */
  readonly stoppedProcesses: number
  /** The cgroups they were found in (removed). */
  readonly cgroups: readonly string[]
}

async function writeAtomic (path: string, data: string): Promise<void> {
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`
  try {
    await writeFile(temp, data, { mode: 0o644 })
    await rename(temp, path)
  } catch (err) {
    await rm(temp, { force: true })
    throw err
  }
}

export function createStateDir (dir: string) {
  const statusFile = join(dir, 'status.json')
  const readyFile = join(dir, 'ready')
  const heartbeatFile = join(dir, 'heartbeat')
  return {
    /** Touched while the launcher's event loop runs: the liveness probe checks its age. */
    async heartbeat (): Promise<void> {
      const now = new Date()
      try {
        await utimes(heartbeatFile, now, now)
      } catch {
        await writeFile(heartbeatFile, '')
      }
    },
    async init (): Promise<void> {
      try {
        await mkdir(dir, { recursive: true })
        await rm(readyFile, { force: true })
      } catch (err) {
        throw new UserError(`cannot use the state dir ${dir} (--state-dir): ${messageOf(err)}`, { cause: err })
      }
    },
    /** The status an earlier launcher left; undefined when there is none or it is unreadable. */
    read: async (): Promise<Status | undefined> => readStatus(statusFile),
    async write (status: Omit<Status, 'updatedAt'>): Promise<void> {
      await writeAtomic(statusFile, statusText(status))
    },
    async setReady (ready: boolean): Promise<void> {
      if (ready) await writeAtomic(readyFile, `${new Date().toISOString()}\n`)
      else await rm(readyFile, { force: true })
    }
  }
}

export type StateDir = ReturnType<typeof createStateDir>

/** A status as status.json and the run record hold it, stamped now. */
function statusText (status: Omit<Status, 'updatedAt'>): string {
  return `${JSON.stringify({ ...status, updatedAt: new Date().toISOString() }, null, 2)}\n`
}

/** A status file a launcher wrote; undefined when there is none or it is unreadable. */
async function readStatus (file: string): Promise<Status | undefined> {
  try {
    const status = JSON.parse(await readFile(file, 'utf8')) as unknown
    // A file a launcher wrote: its phase is checked; the rest is reported as it is.
    // eslint-disable-next-line @typescript-eslint/no-unsafe-type-assertion
    return typeof status === 'object' && status !== null && 'phase' in status ? status as Status : undefined
  } catch {
    return undefined
  }
}

/**
 * Each action's last status, kept in the host dir (`.pkg-serve-runs/ACTION.json`): on the node,
 * so that a launcher in a restarted container, or in a new pod, learns what the earlier one was
 * doing when it died, and where its run's cgroup is.
 */
export function createRunRecords (hostDir: string) {
  const dir = join(hostDir, '.pkg-serve-runs')
  const file = (action: string): string => join(dir, `${action}.json`)
  return {
    read: async (action: string): Promise<Status | undefined> => readStatus(file(action)),
    async write (status: Omit<Status, 'updatedAt'>): Promise<void> {
      await mkdir(dir, { recursive: true })
      await writeAtomic(file(status.action), statusText(status))
    },
    /** After a failed write: an older status (say, "running") must not outlive it. */
    async forget (action: string): Promise<void> {
      await rm(file(action), { force: true })
    }
  }
}

/** What makes a run "the same" for --once: the script's bytes and its arguments. */
export function runKey (scriptSha256: string, args: readonly string[]): string {
  return createHash('sha256').update(JSON.stringify({ script: scriptSha256, args })).digest('hex')
}

export function createOnceRecords (hostDir: string) {
  const dir = join(hostDir, '.pkg-serve-once')
  const file = (action: string): string => join(dir, `${action}.json`)
  return {
    async succeeded (action: string, key: string): Promise<{ at: string } | undefined> {
      try {
        const record: unknown = JSON.parse(await readFile(file(action), 'utf8'))
        if (typeof record !== 'object' || record === null || !('key' in record) || !('at' in record)) return undefined
        return record.key === key && typeof record.at === 'string' ? { at: record.at } : undefined
      } catch {
        return undefined
      }
    },
    async record (action: string, key: string, args: readonly string[]): Promise<void> {
      await mkdir(dir, { recursive: true })
      await writeAtomic(file(action), `${JSON.stringify({ key, action, args, at: new Date().toISOString() })}\n`)
    }
  }
}
