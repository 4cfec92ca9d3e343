// `pkg-serve validate`: checks a local manifest with the server's own rules (the same size limit,
// UTF-8 decoding and parser) and, with --remote, that every path it names exists in the
// container. One line per problem.

import { readFile } from 'node:fs/promises'
import { ConfigError } from '../config.ts'
import type { ValidateConfig } from '../config.ts'
import { ManifestError, decodeManifest, formatIssue, parseManifest, tableName } from '../../manifest/parse.ts'
import { count } from '../../lib/words.ts'
import { openStore } from '../../storage/open.ts'
import { isStorageError } from '../../storage/types.ts'
import { errnoCode, messageOf } from '../../lib/errors.ts'

export async function validate (config: ValidateConfig, env: Readonly<Record<string, string | undefined>>, out: (line: string) => void, err: (line: string) => void): Promise<number> {
  let bytes: Buffer
  try {
    bytes = await readFile(config.file)
  } catch (e) {
    throw new ConfigError(`cannot read ${config.file}: ${errnoCode(e) ?? messageOf(e)}`)
  }
  let manifest
  try {
    manifest = parseManifest(decodeManifest(bytes, config.file), config.file)
  } catch (e) {
    if (!(e instanceof ManifestError)) throw e
    for (const issue of e.issues) err(`${config.file}: ${formatIssue(issue)}`)
    return 1
  }

  if (config.remote === undefined) {
    out(`${config.file}: valid (${count(manifest.packages.size, 'package')}, ${count(manifest.entryCount, 'entry', 'entries')})`)
    return 0
  }

  const { store, description } = await openStore({ ...config, storage: config.remote }, env)
  let missing = 0
  try {
    const all = [...manifest.packages.values()].flatMap((tags) => [...tags.values()])
    // A few at a time: a large manifest must not open hundreds of requests at once.
    for (let i = 0; i < all.length; i += 16) {
      await Promise.all(all.slice(i, i + 16).map(async (entry) => {
        try {
          await store.stat(entry.path)
        } catch (e) {
          missing++
          const why = isStorageError(e) ? e.message : String(e)
          err(`${config.file}: ${tableName(entry.name, entry.tag)} path "${entry.path}": ${why}`)
        }
      }))
    }
  } finally {
    await store.close()
  }
  if (missing > 0) return 1
  out(`${config.file}: valid (${count(manifest.packages.size, 'package')}, ${count(manifest.entryCount, 'entry', 'entries')}); every path exists in ${description}`)
  return 0
}
