// A directory laid out like a mounted ConfigMap volume: NAME -> ..data/NAME, ..data -> ..<ts>,
// updated the way the kubelet does it (a new timestamped dir, then an atomic swap of ..data).

import { chmod, mkdir, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

let serial = 0

export async function writeConfigMap (dir: string, files: Record<string, string>): Promise<void> {
  await mkdir(dir, { recursive: true })
  const stamp = `..2026_11_24_00_00_00.${process.pid}_${serial++}`
  await mkdir(join(dir, stamp))
  for (const [name, content] of Object.entries(files)) {
    await writeFile(join(dir, stamp, name), content)
    await chmod(join(dir, stamp, name), 0o644)
  }
  let previous: string | undefined
  try { previous = await readlink(join(dir, '..data')) } catch { previous = undefined }
  await symlink(stamp, join(dir, '..data_tmp'))
  await rename(join(dir, '..data_tmp'), join(dir, '..data'))
  for (const name of Object.keys(files)) {
    try { await symlink(join('..data', name), join(dir, name)) } catch { /* already linked */ }
  }
  if (previous !== undefined) await rm(join(dir, previous), { recursive: true, force: true })
}
