// Actions are the scripts of the ConfigMap mounted at --actions-dir. This module finds one,
// reads it, and copies it atomically (write, fsync, rename) and executable into the host dir,
// where the node can run it. It never follows a name out of the actions dir, and never leaves
// a half-written script where the node could run it.

import { createHash, randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { UserError, errnoCode, messageOf } from '../lib/errors.ts'

export class ActionError extends UserError {
  override name = 'ActionError'
}

const ACTION_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,252}$/

/** The actions a ConfigMap volume holds (its `..data` plumbing and dotfiles left out). */
export async function listActions (actionsDir: string): Promise<string[]> {
  const entries = await readdir(actionsDir, { withFileTypes: true })
  return entries.filter((e) => !e.name.startsWith('.') && !e.isDirectory()).map((e) => e.name).sort()
}

export interface ActionScript {
  readonly name: string
  readonly content: Buffer
  readonly sha256: string
}

/**
 * ACTION names a file here, a cgroup and records on the node: anything but a plain file name
 * ("../x", "a/b") is refused before it reaches a path.
 */
export function checkActionName (name: string): void {
  if (!ACTION_NAME.test(name)) {
    throw new ActionError(`action "${name}" is not a file name (letters, digits, ".", "_", "-")`)
  }
}

/** Reads ACTION from the actions dir; a missing one is an error that lists what exists. */
export async function readAction (actionsDir: string, name: string): Promise<ActionScript> {
  checkActionName(name)
  let content: Buffer
  try {
    content = await readFile(join(actionsDir, name))
  } catch (err) {
    const code = errnoCode(err)
    if (code === 'ENOENT' || code === 'EISDIR') {
      let available: string
      try {
        const names = await listActions(actionsDir)
        available = names.length > 0 ? `the actions there are: ${names.join(', ')}` : 'it holds no actions'
      } catch {
        throw new ActionError(`action "${name}": the actions directory ${actionsDir} does not exist or cannot be read (is the ConfigMap mounted?)`)
      }
      throw new ActionError(`no action "${name}" in ${actionsDir}; ${available}`)
    }
    throw new ActionError(`cannot read action "${name}" in ${actionsDir}: ${messageOf(err)}`)
  }
  return { name, content, sha256: createHash('sha256').update(content).digest('hex') }
}

/** Copies the script into dir/name, replacing any earlier copy in one rename, mode 0755. */
export async function installAction (dir: string, script: ActionScript): Promise<string> {
  await mkdir(dir, { recursive: true })
  const target = join(dir, script.name)
  const temp = join(dir, `.${script.name}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    const handle = await open(temp, 'wx', 0o755)
    try {
      await handle.writeFile(script.content)
      await handle.chmod(0o755)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, target)
  } catch (err) {
    await rm(temp, { force: true })
    throw new ActionError(`cannot copy action "${script.name}" to ${dir}: ${messageOf(err)}`)
  }
  return target
}
