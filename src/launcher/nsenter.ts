// Builds the argv that runs an action on the node: an array for spawn, never a shell string.
// The SPEC's form is `nsenter --target T --mount --uts --ipc --net --pid -- <host-path>/<ACTION>
// SCRIPT_ARGS...`. With a run cgroup, a shim that joins it comes first (pod: before nsenter, so
// nsenter's argv is unchanged) or right after nsenter (node: in the node's cgroup namespace,
// which nsenter then also enters); see cgroup.ts for why.

import { joinArgv } from './cgroup.ts'
import type { RunCgroup } from './cgroup.ts'

export interface CommandOptions {
  readonly action: string
  readonly args: readonly string[]
  /** Enter the target's namespaces (the node) with nsenter; false runs the script here. */
  readonly nsenter: boolean
  readonly nsenterTarget: string
  /** Where the copy is, as the node sees it (used with nsenter). */
  readonly hostPath: string
  /** Where the copy is, as this container sees it (used without nsenter). */
  readonly hostDir: string
  /** The run's cgroup, joined before the script starts; undefined: none (no cgroup v2). */
  readonly cgroup?: Pick<RunCgroup, 'joinDir' | 'joinOnNode'>
}

function joinPath (dir: string, name: string): string {
  return `${dir.replace(/\/+$/, '')}/${name}`
}

function split (argv: readonly string[]): { file: string, args: string[] } {
  const [file = '', ...args] = argv
  return { file, args }
}

export function buildCommand (opts: CommandOptions): { file: string, args: string[] } {
  const { cgroup } = opts
  if (!opts.nsenter) {
    const script = [joinPath(opts.hostDir, opts.action), ...opts.args]
    return split(cgroup === undefined ? script : joinArgv(cgroup.joinDir, script))
  }
  const script = [joinPath(opts.hostPath, opts.action), ...opts.args]
  const namespaces = ['--mount', '--uts', '--ipc', '--net', '--pid']
  if (cgroup?.joinOnNode === true) {
    return split(['nsenter', '--target', opts.nsenterTarget, '--cgroup', ...namespaces, '--', ...joinArgv(cgroup.joinDir, script)])
  }
  const nsenter = ['nsenter', '--target', opts.nsenterTarget, ...namespaces, '--', ...script]
  return split(cgroup === undefined ? nsenter : joinArgv(cgroup.joinDir, nsenter))
}
