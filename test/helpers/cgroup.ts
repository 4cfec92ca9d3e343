// Cgroups for tests: a fresh cgroup v2 per test under this process's own, removed with whatever
// is left in it afterwards (a failing test must not leave processes behind). Launchers and
// fake nodes run inside one, so that concurrent tests never see each other's run cgroups, and
// prefixes that start a launcher the way a pod or a node would see cgroups. Needs root.

import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import type { TestContext } from 'node:test'
import { findOwnCgroup, stopCgroup } from '../../src/launcher/cgroup.ts'

export const NEEDS_ROOT_CGROUP = 'needs root to make cgroups and namespaces (CI runs as root)'

/** The cgroup v2 directory this test process can make cgroups in, or why not. */
export async function cgroupRoot (): Promise<string | { readonly unavailable: string }> {
  if (process.getuid?.() !== 0) return { unavailable: NEEDS_ROOT_CGROUP }
  const own = await findOwnCgroup()
  return own === undefined ? { unavailable: 'no cgroup v2 is mounted on this machine' } : own.dir
}

/** A fresh cgroup for one test, emptied (SIGKILL) and removed after it. */
export async function testCgroup (t: TestContext, name = 'test'): Promise<string> {
  const root = await cgroupRoot()
  if (typeof root !== 'string') throw new Error(root.unavailable)
  const dir = `${root}/pkg-serve-${name}-${process.pid}-${randomBytes(4).toString('hex')}`
  await mkdir(dir)
  t.after(async () => { await stopCgroup(dir, 0) })
  return dir
}

/** A prefix for startCli: the command joins `cgroup`, then execs (the pid stays the launcher's). */
export function inCgroup (cgroup: string): string[] {
  return ['/bin/sh', '-c', 'echo 0 > "$1/cgroup.procs" && shift && exec "$@"', 'in-cgroup', cgroup]
}

/**
 * As a pod on a cgroup v2 node sees it: its own cgroup namespace (rooted at `cgroup`) and cgroup2
 * mounted alone at /sys/fs/cgroup, in a mount namespace of its own.
 */
export function asPod (cgroup: string): string[] {
  return [
    ...inCgroup(cgroup), 'unshare', '--cgroup', '--mount', '--propagation', 'private', '--',
    '/bin/sh', '-c', 'mount -t cgroup2 none /sys/fs/cgroup && exec "$@"', 'as-pod'
  ]
}

/** Shell: takes away every cgroup2 mount of the mount namespace it runs in (a cgroup v1 machine). */
export const UNMOUNT_CGROUP2 = 'for m in $(findmnt -rn -t cgroup2 -o TARGET); do umount -l "$m" || exit 1; done'

/** No cgroup v2 anywhere in sight: every cgroup2 mount unmounted in a mount namespace of its own. */
export function withoutCgroup2 (): string[] {
  return [
    'unshare', '--mount', '--propagation', 'private', '--',
    '/bin/sh', '-c', `${UNMOUNT_CGROUP2}; exec "$@"`, 'no-cgroup2'
  ]
}
