// `pkg-serve publish`: stream a file into the container, then set [name.tag] in the manifest
// with a conditional write on the ETag it read, retrying on conflict, so that concurrent
// publishers never lose each other's entries. It must never lose bytes either:
// - the manifest blob is never written as a package, and the blob another entry (or an earlier
//   version of this one) names is never replaced without --overwrite;
// - the blob is created only if it does not exist (If-None-Match: *), or with --overwrite only
//   over the version looked at (If-Match): of two publishers of one blob, one commits, the other
//   fails before it touched the manifest;
// - each manifest write is preceded by a check that the blob is still the version this publisher
//   wrote, so the entry's path, bytes and sha256 always come from one publisher;
// - a blob it created but could not name in the manifest is deleted again (If-Match), so a retry
//   needs no --overwrite.
// Memory stays bounded whatever the file's size.

import { createHash } from 'node:crypto'
import { open, stat } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { basename } from 'node:path'
import { Transform } from 'node:stream'
import mime from 'mime-types'
import { ConfigError } from '../config.ts'
import type { PublishConfig } from '../config.ts'
import { NAME_PATTERN, entrySchema, parseManifest, tableName } from '../../manifest/parse.ts'
import type { Manifest, PackageEntry } from '../../manifest/parse.ts'
import { setEntry } from '../../manifest/edit.ts'
import { openStore } from '../../storage/open.ts'
import { isStorageError } from '../../storage/types.ts'
import type { BlobProperties, WritableStore } from '../../storage/types.ts'
import { UserError, errnoCode, messageOf } from '../../lib/errors.ts'
import { backoffDelay, wait } from '../../lib/backoff.ts'

export interface PublishResult {
  readonly entry: PackageEntry
  readonly size: number
  readonly etag: string
  readonly manifestEtag: string
  readonly attempts: number
}

type Out = (line: string) => void

/** A publish refused to protect what is already there; nothing was changed. */
export class PublishConflictError extends UserError {
  override name = 'PublishConflictError'
}

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

interface ManifestRead { readonly text: string, readonly etag: string | null, readonly manifest: Manifest }

/** The manifest as it is now (empty when there is none yet); a missing container is reported as such. */
async function readManifest (store: WritableStore, manifestPath: string): Promise<ManifestRead> {
  try {
    const read = await store.readText(manifestPath)
    if (read.changed) return { text: read.text, etag: read.etag, manifest: parseManifest(read.text, manifestPath) }
  } catch (err) {
    if (!isStorageError(err) || err.kind !== 'not-found' || err.code === 'ContainerNotFound') throw err
  }
  return { text: '', etag: null, manifest: parseManifest('', manifestPath) }
}

/** The entries other than [name.tag] that name `path`. */
function othersNaming (manifest: Manifest, path: string, name: string, tag: string): PackageEntry[] {
  const found: PackageEntry[] = []
  for (const tags of manifest.packages.values()) {
    for (const entry of tags.values()) {
      if (entry.path === path && !(entry.name === name && entry.tag === tag)) found.push(entry)
    }
  }
  return found
}

function list (entries: readonly PackageEntry[]): string {
  return entries.map((e) => tableName(e.name, e.tag)).join(', ')
}

/** Refuses, before any byte is sent, a publish that would replace bytes an entry names. */
function checkPath (manifest: Manifest, config: PublishConfig, path: string): void {
  if (config.overwrite) return
  const others = othersNaming(manifest, path, config.name, config.tag)
  if (others.length > 0) {
    throw new PublishConflictError(`refusing to replace blob "${path}": ${list(others)} ${others.length === 1 ? 'names' : 'name'} it; ` +
      'choose another --path, or add --overwrite to replace its bytes for every entry that names it')
  }
  if (manifest.packages.get(config.name)?.get(config.tag)?.path === path) {
    throw new PublishConflictError(`refusing to replace blob "${path}": ${tableName(config.name, config.tag)} already names it (published before); ` +
      'publish a new tag, or add --overwrite to replace its bytes')
  }
}

/**
 * Reads the manifest, sets the entry, writes it back only if nobody wrote in between, and only
 * while the blob is still the version uploaded. With --overwrite, the other entries naming the
 * same blob get its new digest, so their downloads keep verifying.
 */
async function updateManifest (store: WritableStore, config: PublishConfig, entry: PackageEntry, blob: BlobProperties, digest: string,
  maxAttempts = 30): Promise<{ etag: string, attempts: number }> {
  for (let attempt = 1; ; attempt++) {
    const { text, etag, manifest } = await readManifest(store, config.manifest)
    const others = othersNaming(manifest, entry.path, entry.name, entry.tag)
    if (others.length > 0 && !config.overwrite) {
      throw new PublishConflictError(`${list(others)} started naming blob "${entry.path}" while it was uploaded; the manifest was not changed`)
    }
    let next = setEntry(text, entry, config.manifest)
    for (const other of others) {
      if (other.sha256 !== undefined) next = setEntry(next, { ...other, sha256: digest }, config.manifest)
    }
    // Still ours? Another publisher's --overwrite may have replaced the blob since it was written;
    // then its own manifest write (which comes after its upload) names its bytes, not ours.
    const now = await store.stat(entry.path).catch((err: unknown) => {
      if (isStorageError(err) && err.kind === 'not-found') return undefined
      throw err
    })
    if (now?.etag !== blob.etag) {
      throw new PublishConflictError(`blob "${entry.path}" was ${now === undefined ? 'deleted' : 'replaced by another publisher'} before ${tableName(entry.name, entry.tag)} named it; ` +
        'the manifest was not changed by this publish')
    }
    try {
      return { etag: await store.writeText(config.manifest, next, etag), attempts: attempt }
    } catch (err) {
      if (!isStorageError(err) || err.kind !== 'changed' || attempt >= maxAttempts) throw err
      // Someone else published in between: read their version and apply ours on top of it.
      await wait(backoffDelay({ initialMs: 50, maxMs: 400, jitter: 1 }, attempt - 1))
    }
  }
}

const unreadableText = (file: string, err: unknown): string => `cannot read ${file}: ${errnoCode(err) ?? messageOf(err)}`

export async function publish (config: PublishConfig, env: Readonly<Record<string, string | undefined>>, out: Out): Promise<PublishResult> {
  if (!NAME_PATTERN.test(config.name)) throw new ConfigError(`invalid --name "${config.name}": must match [A-Za-z0-9._-]{1,128}`)
  if (!NAME_PATTERN.test(config.tag)) throw new ConfigError(`invalid --tag "${config.tag}": must match [A-Za-z0-9._-]{1,128}`)
  let size: number
  let file: FileHandle | undefined
  try {
    const s = await stat(config.file)
    // Not a FIFO or a device: opening one could wait for a writer, and its size says nothing.
    if (!s.isFile()) throw new ConfigError(`${config.file} is not a regular file`)
    // Opened before storage is touched: a file we may not read is our error, not storage's.
    file = await open(config.file, 'r')
    size = (await file.stat()).size
  } catch (err) {
    await file?.close().catch(() => {})
    if (err instanceof ConfigError) throw err
    throw new ConfigError(unreadableText(config.file, err))
  }
  try {
    return await publishFile(config, env, out, file, size)
  } finally {
    await file.close().catch(() => {})
  }
}

async function publishFile (config: PublishConfig, env: Readonly<Record<string, string | undefined>>, out: Out, file: FileHandle, size: number): Promise<PublishResult> {
  // N/T/BASENAME: two tags never share bytes by accident.
  const path = config.path ?? `${config.name}/${config.tag}/${basename(config.file)}`
  const checked = entrySchema.shape.path.safeParse(path)
  if (!checked.success) throw new ConfigError(`invalid --path "${path}": ${checked.error.issues[0]?.message ?? 'not a blob name'}`)
  if (path === config.manifest) {
    throw new PublishConflictError(`refusing to upload ${config.file} as "${path}": that blob is the manifest itself; choose another --path`)
  }

  const { store, description } = await openStore(config, env)
  try {
    let current: ManifestRead
    try {
      current = await readManifest(store, config.manifest)
    } catch (err) {
      if (!isStorageError(err) || err.code !== 'ContainerNotFound') throw err
      if (await store.createContainer()) out(`created container "${config.container}", which did not exist: ${description}`)
      current = await readManifest(store, config.manifest)
    }
    checkPath(current.manifest, config, path)
    const existing = await store.stat(path).catch((err: unknown) => {
      if (isStorageError(err) && err.kind === 'not-found') return undefined
      throw err
    })
    if (existing !== undefined && !config.overwrite) {
      throw new PublishConflictError(`refusing to replace blob "${path}": it exists (${existing.size} bytes) though no entry names it ` +
        '(left by a publish that failed, or being published right now); add --overwrite to replace it, or choose another --path')
    }

    let hashed = 0
    const hash = createHash('sha256')
    const hasher = new Transform({
      transform (chunk: Buffer, _encoding, callback) {
        hash.update(chunk)
        hashed += chunk.length
        callback(null, chunk)
      }
    })
    const source = file.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false, start: 0 })
    let readError: Error | undefined
    source.once('error', (err) => {
      readError = err
      hasher.destroy(err)
    })
    // The upload listens once it has started (a store may first make a directory): until then a
    // failed read must not be an unhandled 'error'; the upload still sees the stream fail.
    hasher.on('error', () => {})
    const progress = progressPrinter(size, process.stderr)
    let blob: BlobProperties
    try {
      blob = await store.upload(path, source.pipe(hasher), {
        contentType: mime.lookup(config.file) || 'application/octet-stream',
        ...(progress !== undefined && { onProgress: progress }),
        // Create only; with --overwrite, replace only the version looked at.
        ...(existing === undefined ? { ifNoneMatch: '*' as const } : { ifMatch: existing.etag })
      })
    } catch (err) {
      if (readError !== undefined) throw new ConfigError(`${unreadableText(config.file, readError)}; nothing was published`)
      if (isStorageError(err) && err.kind === 'changed') {
        throw new PublishConflictError(`blob "${path}" was ${existing === undefined ? 'created' : 'replaced'} by another publisher while this one uploaded; ` +
          'nothing was changed by this publish')
      }
      throw err
    }
    // The digest is of the bytes that went into the blob, whatever the file holds by now.
    const digest = hash.digest('hex')
    if (blob.size !== hashed) throw new Error(`storage holds ${blob.size} bytes of blob "${path}", but ${hashed} were sent`)

    const entry: PackageEntry = {
      name: config.name,
      tag: config.tag,
      path,
      ...(config.sha256 && { sha256: digest })
    }
    let manifest: { etag: string, attempts: number }
    try {
      manifest = await updateManifest(store, config, entry, blob, digest)
    } catch (err) {
      if (existing === undefined) await takeBack(store, config.manifest, path, blob.etag)
      throw err
    }
    out(`published ${config.file} as ${tableName(config.name, config.tag)}: blob "${path}" (${hashed} bytes, sha256 ${digest}) in ${description}; ` +
      `${config.manifest} updated (ETag ${manifest.etag}${manifest.attempts > 1 ? `, after ${manifest.attempts - 1} concurrent update(s)` : ''})`)
    return { entry, size: hashed, etag: blob.etag, manifestEtag: manifest.etag, attempts: manifest.attempts }
  } finally {
    await store.close()
  }
}

/**
 * Deletes the blob this publish created when no entry names it after all (the manifest update
 * failed), so that trying again needs no --overwrite. If the manifest cannot be read, or names
 * the blob (a write that timed out may still have landed), the blob stays.
 */
async function takeBack (store: WritableStore, manifestPath: string, path: string, etag: string): Promise<void> {
  try {
    const { manifest } = await readManifest(store, manifestPath)
    for (const tags of manifest.packages.values()) for (const e of tags.values()) if (e.path === path) return
    await store.remove(path, etag)
  } catch {
    // Best effort: the error that matters is the one being thrown.
  }
}
