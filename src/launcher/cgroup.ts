// The run's cgroup (v2): where it is, how the script gets into it, and how to end everything in
// it. A cgroup is the only handle on a script's processes that a daemon cannot escape: setsid,
// double forks and reparenting to the node's init all leave a process in its cgroup.
//
// Where (see placeRun):
// - `pod` (default): `<the launcher's own cgroup>/pkg-serve-run.<ACTION>`. The pod's limits apply
//   to it (usage is charged to the nearest ancestor with the controllers enabled: the
//   container's cgroup) and it dies with the pod. The launcher enables no controllers in its own
//   cgroup, so the kernel's no-internal-processes rule never applies and the launcher stays where
//   it is (moving it would gain nothing, and a cgroup that distributes controllers refuses the
//   processes that `kubectl exec` and exec probes put into the container's cgroup).
// - `node`: `<the node's cgroup2 mount>/pkg-serve.slice/<ACTION>@<PID>.<START>`, outside the
//   pod's limits, named for the launcher that made it (its PID and start time, hostPID): two
//   launchers of one action (a rollout's surge pod, a Job beside the DaemonSet) never share one,
//   so neither ends the other's script. The node's mount is found in /proc/<target>/mountinfo and
//   reached through /proc/<target>/root.
// A launcher that starts after a crash finds what an earlier one left: in the pod, at the fixed
// path in its container's cgroup; on the node, every cgroup of the action in the slice whose
// launcher no longer runs (see runCgroupsOf); and the path recorded in the earlier status
// (status.json and the run record on the node).
//
// How the script gets in (see joinArgv): a tiny `sh` shim writes itself into the cgroup's
// `cgroup.procs` and then execs; whatever it execs, and everything that forks from there, is in
// the cgroup from its first instruction on. In `pod` mode the shim runs here, before nsenter,
// so the nsenter argv is exactly the SPEC's. In `node` mode it runs after nsenter, in the node's
// namespaces (nsenter also enters the node's cgroup namespace, `--cgroup`): with `nsdelegate`
// (systemd's default) the kernel only lets a process move into a cgroup that its own cgroup
// namespace can see, and a pod's private cgroup namespace cannot see the node's slice.
//
// Ending (stopCgroup): SIGTERM to every process in the cgroup and its sub-cgroups (newcomers
// too), SIGKILL after the grace period (`cgroup.kill` where the kernel has it: no fork race),
// then wait until it is empty and remove it. It never signals a process outside the cgroup and
// never touches a cgroup that is not a run's (a recorded path is checked before use).

import { constants as fsConstants } from 'node:fs'
import type { Dirent } from 'node:fs'
import { access, mkdir, readdir, readFile, readlink, rmdir, statfs, writeFile } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { basename, dirname } from 'node:path'
import { errnoCode } from '../lib/errors.ts'
import type { LauncherConfig } from '../cli/config.ts'
import type { LauncherProcess } from './state.ts'

/** statfs(2) type of a cgroup v2 file system. */
export const CGROUP2_SUPER_MAGIC = 0x63677270

/** --script-cgroup: in the pod's cgroup or on the node (the schema in cli/config.ts defines it). */
export type ScriptCgroup = LauncherConfig['scriptCgroup']

export interface MountEntry {
  /** The mounted directory of the file system (for cgroup2: relative to the reader's cgroup namespace). */
  readonly root: string
  readonly mountPoint: string
  readonly fsType: string
}

/** Parses /proc/PID/mountinfo (proc(5)): root is field 4, the mount point field 5, the type follows " - ". */
export function parseMountInfo (text: string): MountEntry[] {
  const out: MountEntry[] = []
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ')
    if (left === undefined || right === undefined) continue
    const fields = left.split(' ')
    const root = fields[3]
    const mountPoint = fields[4]
    const fsType = right.split(' ')[0]
    if (root === undefined || mountPoint === undefined || fsType === undefined) continue
    out.push({ root: unescapeMountPath(root), mountPoint: unescapeMountPath(mountPoint), fsType })
  }
  return out
}

/** mountinfo writes space, tab, newline and backslash as octal escapes (\040 …). */
function unescapeMountPath (path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)))
}

/** The cgroup v2 path in /proc/PID/cgroup (the `0::` line), relative to the reader's cgroup namespace. */
export function parseProcCgroup (text: string): string | undefined {
  const line = text.split('\n').find((l) => l.startsWith('0::'))
  return line?.slice(3)
}

async function isCgroup2 (path: string): Promise<boolean> {
  try {
    return (await statfs(path)).type === CGROUP2_SUPER_MAGIC
  } catch {
    return false
  }
}

function under (root: string, path: string): string | undefined {
  if (root === '/') return path
  if (path === root) return '/'
  return path.startsWith(`${root}/`) ? path.slice(root.length) : undefined
}

function join (dir: string, rel: string): string {
  return `${dir.replace(/\/+$/, '')}/${rel.replace(/^\/+/, '')}`.replace(/\/+$/, '') || '/'
}

export interface OwnCgroup {
  /** The cgroup2 mount point this process sees (the top of the hierarchy visible here). */
  readonly mount: string
  /** This process's own cgroup directory under it. */
  readonly dir: string
}

/**
 * This process's cgroup v2 directory, from /proc/self/mountinfo and /proc/self/cgroup; undefined
 * when no cgroup2 is mounted where this process can use it (cgroup v1 alone, or hidden mounts).
 *
 * With `through` (a process id), the mounts are those of that process, reached through
 * /proc/PID/root: a privileged container that sees no cgroup2 of its own (a hybrid host's runc
 * mounts v1 only) still finds its cgroup in the node's tree, with hostPID. Only when both share
 * one cgroup namespace: otherwise this process's path means nothing in the other's tree.
 */
export async function findOwnCgroup (through?: string): Promise<OwnCgroup | undefined> {
  const proc = through === undefined ? '/proc/self' : `/proc/${through}`
  const prefix = through === undefined ? '' : `/proc/${through}/root`
  let mounts: MountEntry[]
  let own: string | undefined
  try {
    if (through !== undefined && await readlink('/proc/self/ns/cgroup') !== await readlink(`${proc}/ns/cgroup`)) return undefined
    mounts = parseMountInfo(await readFile(`${proc}/mountinfo`, 'utf8'))
    own = parseProcCgroup(await readFile('/proc/self/cgroup', 'utf8'))
  } catch {
    return undefined
  }
  if (own === undefined) return undefined
  for (const m of mounts.filter((e) => e.fsType === 'cgroup2')) {
    const rel = under(m.root, own)
    if (rel === undefined) continue
    const mount = prefix === '' ? m.mountPoint : join(prefix, m.mountPoint)
    const dir = join(mount, rel)
    // A mount hidden under a later one (cgroup2 mounted over /sys/fs/cgroup) fails this check.
    if (await isCgroup2(dir)) return { mount, dir }
  }
  return undefined
}

export interface NodeCgroupMount {
  /** The node's cgroup2 mount as this process reaches it (/proc/T/root/…). */
  readonly here: string
  /** The same directory as the node (and a process in its namespaces) sees it. */
  readonly onNode: string
}

/** The node's cgroup2 mount, read from the target's mountinfo and reached through /proc/T/root. */
export async function findNodeCgroupMount (target: string): Promise<NodeCgroupMount | undefined> {
  let mounts: MountEntry[]
  try {
    mounts = parseMountInfo(await readFile(`/proc/${target}/mountinfo`, 'utf8'))
  } catch {
    return undefined
  }
  for (const m of mounts.filter((e) => e.fsType === 'cgroup2')) {
    const here = join(`/proc/${target}/root`, m.mountPoint)
    if (await isCgroup2(here)) return { here, onNode: m.mountPoint }
  }
  return undefined
}

/** Where a run's cgroup is, as this process sees it and as the joining shim sees it. */
export interface RunCgroup {
  readonly mode: ScriptCgroup
  /** The cgroup's directory as this process sees it (create, signal, remove). */
  readonly dir: string
  /** The same directory as the shim that joins it sees it. */
  readonly joinDir: string
  /** The shim runs after nsenter, in the node's namespaces (else before it, here). */
  readonly joinOnNode: boolean
}

export interface PlaceOptions {
  readonly action: string
  readonly scriptCgroup: ScriptCgroup
  /** Enter the target's namespaces; false: the "node" is this machine (development). */
  readonly nsenter: boolean
  readonly nsenterTarget: string
  /** The launcher placing the run: a node-mode cgroup is named for it. */
  readonly owner?: LauncherProcess | undefined
}

export const POD_PREFIX = 'pkg-serve-run.'
export const NODE_SLICE = 'pkg-serve.slice'

/**
 * Whose node-mode run cgroup `name` is, for `action`: the launcher in `ACTION@PID.START`; null
 * for a bare `ACTION` (a launcher that could not read its start time, or an older version);
 * undefined when it is not one of this action's.
 */
function ownerOf (name: string, action: string): LauncherProcess | null | undefined {
  if (name === action) return null
  if (!name.startsWith(`${action}@`)) return undefined
  const m = /^(\d+)\.(\d+)$/.exec(name.slice(action.length + 1))
  return m === null ? undefined : { pid: Number(m[1]), startTicks: Number(m[2]) }
}

/** The launcher a node-mode run cgroup of `action` is named for (null: none named; undefined: not one). */
export function runCgroupOwner (dir: string, action: string): LauncherProcess | null | undefined {
  return basename(dirname(dir)) === NODE_SLICE ? ownerOf(basename(dir), action) : undefined
}

/** This action's run cgroups in a node's slice, each with the launcher that made it (if known). */
export async function runCgroupsOf (slice: string, action: string): Promise<Array<{ readonly dir: string, readonly owner: LauncherProcess | null }>> {
  let entries: Dirent[]
  try {
    entries = await readdir(slice, { withFileTypes: true })
  } catch {
    return []
  }
  const out: Array<{ dir: string, owner: LauncherProcess | null }> = []
  for (const e of entries) {
    const owner = e.isDirectory() ? ownerOf(e.name, action) : undefined
    if (owner !== undefined) out.push({ dir: join(slice, e.name), owner })
  }
  return out
}

/** The run's cgroup for this action and mode, or why there is none (no cgroup v2 reachable). */
export async function placeRun (opts: PlaceOptions): Promise<RunCgroup | { readonly unavailable: string }> {
  if (opts.scriptCgroup === 'pod' || !opts.nsenter) {
    const own = await findOwnCgroup() ?? await findOwnCgroup(opts.nsenterTarget)
    if (own === undefined) return { unavailable: `no cgroup v2 is mounted here (/proc/self/mountinfo), nor reachable in this cgroup namespace through /proc/${opts.nsenterTarget}/root` }
    const dir = opts.scriptCgroup === 'pod' ? join(own.dir, `${POD_PREFIX}${opts.action}`) : join(own.mount, `${NODE_SLICE}/${nodeRunName(opts)}`)
    return { mode: opts.scriptCgroup, dir, joinDir: dir, joinOnNode: false }
  }
  const node = await findNodeCgroupMount(opts.nsenterTarget)
  if (node === undefined) return { unavailable: `no cgroup v2 is mounted on the node (/proc/${opts.nsenterTarget}/mountinfo)` }
  const rel = `${NODE_SLICE}/${nodeRunName(opts)}`
  return { mode: 'node', dir: join(node.here, rel), joinDir: join(node.onNode, rel), joinOnNode: true }
}

function nodeRunName (opts: PlaceOptions): string {
  return opts.owner === undefined ? opts.action : `${opts.action}@${opts.owner.pid}.${opts.owner.startTicks}`
}

/** Whether `dir` is a cgroup a launcher of `action` would make (checked before trusting a recorded path). */
export async function isRunCgroup (dir: string, action: string): Promise<boolean> {
  const name = basename(dir)
  const isOurs = name === `${POD_PREFIX}${action}` || runCgroupOwner(dir, action) !== undefined
  return isOurs && await isCgroup2(dir)
}

/**
 * The argv that joins `cgroup` and then execs `argv`. `0` in cgroup.procs means "the writer".
 * A failed join exits 125 with a message: a script outside its cgroup could not be stopped.
 */
export function joinArgv (cgroupDir: string, argv: readonly string[]): string[] {
  return [
    '/bin/sh', '-c',
    'echo 0 > "$1/cgroup.procs" || { echo "pkg-serve: cannot join the run\'s cgroup $1" >&2; exit 125; }; shift; exec "$@"',
    'pkg-serve-join', cgroupDir, ...argv
  ]
}

/** Makes the cgroup (and its parent slice); an existing one is reused (the caller emptied it). */
export async function createCgroup (dir: string): Promise<void> {
  await mkdir(dir, { recursive: true })
  // Fail here, with a reason, rather than in the shim: mkdir may succeed where joining cannot.
  await access(`${dir}/cgroup.procs`, fsConstants.W_OK)
}

export async function exists (dir: string): Promise<boolean> {
  try {
    await access(`${dir}/cgroup.procs`)
    return true
  } catch {
    return false
  }
}

/** Every process in the cgroup and its sub-cgroups (PIDs as this process's namespace numbers them). */
export async function cgroupPids (dir: string): Promise<number[]> {
  const out: number[] = []
  try {
    for (const p of (await readFile(`${dir}/cgroup.procs`, 'utf8')).split('\n')) {
      // 0: a process outside this PID namespace; it cannot be signalled from here anyway.
      if (/^[1-9]\d*$/.test(p)) out.push(Number(p))
    }
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.isDirectory()) out.push(...await cgroupPids(`${dir}/${e.name}`))
    }
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err
  }
  return out
}

/** Whether any process is left in the cgroup or below it (cgroup.events, kept by the kernel). */
export async function populated (dir: string): Promise<boolean> {
  try {
    return /^populated 1$/m.test(await readFile(`${dir}/cgroup.events`, 'utf8'))
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false
    throw err
  }
}

/** Short descriptions of the processes in the cgroup, for the log ("1234 sleep"). */
export async function describe (pids: readonly number[]): Promise<string[]> {
  return Promise.all(pids.slice(0, 20).map(async (pid) => {
    const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')
    return `${pid} ${comm.trim()}`
  }))
}

function signal (pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch { /* already gone */ }
}

export interface StopResult {
  /** Processes found in the cgroup (SIGTERM). */
  readonly processes: number
  /** Whether some outlived the grace period and were killed. */
  readonly killed: boolean
  /** Whether the cgroup is gone (false: a process would not die, say in uninterruptible I/O). */
  readonly removed: boolean
}

const POLL_MS = 25
/** How long to wait for SIGKILLed processes to be gone before leaving the cgroup behind. */
const KILL_WAIT_MS = 30_000

/** SIGTERM everything in the cgroup, SIGKILL after graceMs, wait until empty, remove it. */
export async function stopCgroup (dir: string, graceMs: number): Promise<StopResult> {
  const termed = new Set<number>()
  const term = async (): Promise<void> => {
    for (const pid of await cgroupPids(dir)) {
      if (termed.has(pid)) continue
      termed.add(pid)
      signal(pid, 'SIGTERM')
    }
  }
  await term()
  const deadline = Date.now() + graceMs
  // Children forked while the first ones were being signalled get their SIGTERM too.
  while (await populated(dir) && Date.now() < deadline) {
    await sleep(POLL_MS)
    await term()
  }
  let killed = false
  if (await populated(dir)) {
    killed = true
    await kill(dir)
    const until = Date.now() + KILL_WAIT_MS
    while (await populated(dir) && Date.now() < until) {
      await sleep(POLL_MS)
      await kill(dir)
    }
  }
  return { processes: termed.size, killed, removed: await removeCgroup(dir) }
}

/** SIGKILL to the whole cgroup: one write to cgroup.kill where the kernel has it (5.14+). */
async function kill (dir: string): Promise<void> {
  try {
    await writeFile(`${dir}/cgroup.kill`, '1')
    return
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err
  }
  for (const pid of await cgroupPids(dir)) signal(pid, 'SIGKILL')
}

/** Removes the cgroup and any sub-cgroups the script made, deepest first; false when one is still busy. */
export async function removeCgroup (dir: string): Promise<boolean> {
  try {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.isDirectory() && !await removeCgroup(`${dir}/${e.name}`)) return false
    }
    await rmdir(dir)
    return true
  } catch (err) {
    const code = errnoCode(err)
    if (code === 'ENOENT') return true
    if (code === 'EBUSY') return false
    throw err
  }
}
