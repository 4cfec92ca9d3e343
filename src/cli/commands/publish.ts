// `pkg-serve publish`: stream a file into the container, then set [name.tag] in the manifest
// with a conditional write on the ETag it read, retrying on conflict, so that concurrent
// publishers never lose each other's entries. Memory stays bounded whatever the file's size.

import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { basename } from 'node:path'
import { Transform } from 'node:stream'
import mime from 'mime-types'
import { ConfigError } from '../config.ts'
import type { PublishConfig } from '../config.ts'
import { NAME_PATTERN, entrySchema, tableName } from '../../manifest/parse.ts'
import type { PackageEntry } from '../../manifest/parse.ts'
import { setEntry } from '../../manifest/edit.ts'
import { openStore } from '../../storage/open.ts'
import { isStorageError } from '../../storage/types.ts'
import type { BlobStore } from '../../storage/types.ts'
import { errnoCode } from '../../lib/errors.ts'
import { backoffDelay, wait } from '../../lib/backoff.ts'

export interface PublishResult {
  readonly entry: PackageEntry
  readonly size: number
  readonly etag: string
  readonly manifestEtag: string
  readonly attempts: number
}

type Out = (line: string) => void

function progressPrinter (total: number, err: NodeJS.WriteStream): ((bytes: number) => void) | undefined {
  if (!err.isTTY) return undefined
  let last = 0
  return (bytes) => {
    const now = Date.now()
    if (now - last < 200 && bytes < total) return
    last = now
    const pct = total > 0 ? Math.floor((bytes / total) * 100) : 100
    err.write(`\ruploading ${(bytes / 1048576).toFixed(1)} / ${(total / 1048576).toFixed(1)} MiB (${pct}%)`)
    if (bytes >= total) err.write('\n')
  }
}

/** Reads the manifest (or none), sets the entry, writes it back only if nobody wrote in between. */
export async function updateManifest (store: BlobStore, manifestPath: string, entry: PackageEntry, maxAttempts = 30): Promise<{ etag: string, attempts: number }> {
  for (let attempt = 1; ; attempt++) {
    let text = ''
    let etag: string | null = null
    try {
      const read = await store.readText(manifestPath)
      if (read.changed) {
        text = read.text
        etag = read.etag
      }
    } catch (err) {
      if (!isStorageError(err) || err.kind !== 'not-found' || err.code === 'ContainerNotFound') throw err
    }
    const next = setEntry(text, entry, manifestPath)
    try {
      return { etag: await store.writeText(manifestPath, next, etag), attempts: attempt }
    } catch (err) {
      if (!isStorageError(err) || err.kind !== 'changed' || attempt >= maxAttempts) throw err
      // Someone else published in between: read their version and apply ours on top of it.
      await wait(backoffDelay({ initialMs: 50, maxMs: 400, jitter: 1 }, attempt - 1))
    }
  }
}

export async function publish (config: PublishConfig, env: Readonly<Record<string, string | undefined>>, out: Out): Promise<PublishResult> {
  if (!NAME_PATTERN.test(config.name)) throw new ConfigError(`invalid --name "${config.name}": must match [A-Za-z0-9._-]{1,128}`)
  if (!NAME_PATTERN.test(config.tag)) throw new ConfigError(`invalid --tag "${config.tag}": must match [A-Za-z0-9._-]{1,128}`)
  let size: number
  try {
    const s = await stat(config.file)
    if (!s.isFile()) throw new ConfigError(`${config.file} is not a regular file`)
    size = s.size
  } catch (err) {
    if (err instanceof ConfigError) throw err
    throw new ConfigError(`cannot read ${config.file}: ${errnoCode(err) ?? (err as Error).message}`)
  }
  const path = config.path ?? basename(config.file)
  const checked = entrySchema.shape.path.safeParse(path)
  if (!checked.success) throw new ConfigError(`invalid --path "${path}": ${checked.error.issues[0]?.message ?? 'not a blob name'}`)

  const { store, description } = await openStore(config, env)
  try {
    const hash = createHash('sha256')
    const hasher = new Transform({
      transform (chunk: Buffer, _encoding, callback) {
        hash.update(chunk)
        callback(null, chunk)
      }
    })
    const source = createReadStream(config.file, { highWaterMark: 1024 * 1024 })
    source.once('error', (err) => hasher.destroy(err))
    const progress = progressPrinter(size, process.stderr)
    const blob = await store.upload(path, source.pipe(hasher), {
      contentType: mime.lookup(config.file) || 'application/octet-stream',
      ...(progress !== undefined && { onProgress: progress })
    })
    const digest = hash.digest('hex')
    if (blob.size !== size) throw new Error(`uploaded ${blob.size} bytes of ${config.file}, which has ${size}: the file changed while it was read`)

    const entry: PackageEntry = {
      name: config.name,
      tag: config.tag,
      path,
      ...(config.sha256 && { sha256: digest })
    }
    const manifest = await updateManifest(store, config.manifest, entry)
    out(`published ${config.file} as ${tableName(config.name, config.tag)}: blob "${path}" (${size} bytes, sha256 ${digest}) in ${description}; ` +
      `${config.manifest} updated (ETag ${manifest.etag}${manifest.attempts > 1 ? `, after ${manifest.attempts - 1} concurrent update(s)` : ''})`)
    return { entry, size, etag: blob.etag, manifestEtag: manifest.etag, attempts: manifest.attempts }
  } finally {
    await store.close()
  }
}
