// A "node" for nsenter tests: a process in its own mount and UTS namespaces (its own hostname),
// made with unshare, whose PID the launcher enters with --nsenter-target. Inside it, the test's
// host dir is bind-mounted at the node's host path, as a hostPath volume would be. Needs root.
// Never targets the machine's PID 1.

import { spawn } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { UNMOUNT_CGROUP2 } from './cgroup.ts'
import { tempDir } from './tmp.ts'

export const isRoot = process.getuid?.() === 0
export const NEEDS_ROOT = 'needs root to make a fake node with unshare and enter it with nsenter (CI runs as root)'

export interface FakeNode {
  readonly pid: number
  readonly hostname: string
  /** The host dir as the launcher (the "container") sees it. */
  readonly hostDir: string
  /** The same directory as the node sees it (only inside the node's mount namespace). */
  readonly hostPath: string
  readonly root: string
}

export interface FakeNodeOptions {
  /**
   * Make the node's cgroups this cgroup v2 directory, as a node with cgroup v2 alone sees them:
   * its own cgroup namespace rooted there, cgroup2 mounted at /sys/fs/cgroup.
   */
  readonly cgroup?: string
  /** A node with no cgroup v2 mounted (cgroup v1 alone): its cgroup2 mounts are taken away. */
  readonly withoutCgroup2?: boolean
}

export async function startFakeNode (t: TestContext, hostname = 'fake-node', options: FakeNodeOptions = {}): Promise<FakeNode> {
  const root = await tempDir(t, 'pkg-serve-node-')
  const hostDir = join(root, 'container-host-dir')
  const hostPath = join(root, 'node-opt-actions')
  await mkdir(hostDir)
  await mkdir(hostPath)
  const cgroup2 = options.cgroup !== undefined
    ? 'mount -t cgroup2 none /sys/fs/cgroup && '
    : options.withoutCgroup2 === true ? `${UNMOUNT_CGROUP2} && ` : ''
  const script = `hostname "$1" && mount --bind "$2" "$3" && ${cgroup2}echo "$$" && exec sleep 3600`
  const unshare = ['unshare', '--mount', '--uts', ...(options.cgroup === undefined ? [] : ['--cgroup']), '--fork', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', hostname, hostDir, hostPath]
  // Joins the cgroup first: the new cgroup namespace is rooted where unshare runs.
  const argv = options.cgroup === undefined ? unshare : ['sh', '-c', 'echo 0 > "$1/cgroup.procs" && shift && exec "$@"', 'join', options.cgroup, ...unshare]
  const [file = 'unshare', ...args] = argv
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  const pid = await new Promise<number>((resolve, reject) => {
    let out = ''
    let err = ''
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString()
      const m = /^(\d+)\n/.exec(out)
      if (m?.[1] !== undefined) resolve(Number(m[1]))
    })
    child.stderr.on('data', (c: Buffer) => { err += c.toString() })
    child.once('exit', (code) => reject(new Error(`unshare exited ${code ?? ''}: ${err}`)))
  })
  if (pid === 1) throw new Error('refusing to use PID 1 as a fake node')
  t.after(() => {
    try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    child.kill('SIGKILL')
  })
  return { pid, hostname, hostDir, hostPath, root }
}
