// Builds the argv that runs an action on the node: an array for spawn, never a shell string.

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
}

function joinPath (dir: string, name: string): string {
  return `${dir.replace(/\/+$/, '')}/${name}`
}

export function buildCommand (opts: CommandOptions): { file: string, args: string[] } {
  if (!opts.nsenter) return { file: joinPath(opts.hostDir, opts.action), args: [...opts.args] }
  return {
    file: 'nsenter',
    args: [
      '--target', opts.nsenterTarget,
      '--mount', '--uts', '--ipc', '--net', '--pid',
      '--', joinPath(opts.hostPath, opts.action), ...opts.args
    ]
  }
}
