// Local directory backend: development, tests, and the pattern for other clouds' backends.
// A directory stands for one container; blob names are relative paths below it. It must never
// resolve a name outside its directory, and never read a whole file into memory (but the
// manifest, which is small and capped).

import { open, stat } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import type { BigIntStats } from 'node:fs'
import { isAbsolute, relative, resolve, sep } from 'node:path'
import type { Readable } from 'node:stream'
import { MAX_TEXT_BYTES, StorageError } from './types.ts'
import type { BlobProperties, BlobStore, ReadOptions, TextRead } from './types.ts'

function etagOf (s: BigIntStats): string {
  return `"${s.ino.toString(16)}-${s.size.toString(16)}-${s.mtimeNs.toString(16)}"`
}

function propertiesOf (s: BigIntStats): BlobProperties {
  return { size: Number(s.size), etag: etagOf(s), lastModified: new Date(Number(s.mtimeMs)) }
}

function toStorageError (err: unknown, path: string): StorageError {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') {
    return new StorageError('not-found', `blob "${path}" does not exist`, { code, cause: err })
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new StorageError('denied', `no permission to read "${path}"`, { code, cause: err })
  }
  return new StorageError('failed', `reading "${path}" failed: ${(err as Error).message}`, { code, cause: err })
}

export function createLocalStore (directory: string): BlobStore {
  const root = resolve(directory)

  function locate (path: string): string {
    const full = resolve(root, ...path.split('/'))
    const rel = relative(root, full)
    if (rel === '' || rel.startsWith(`..${sep}`) || rel === '..' || isAbsolute(rel)) {
      throw new StorageError('not-found', `blob "${path}" is outside the container`)
    }
    return full
  }

  async function openFile (path: string): Promise<{ handle: FileHandle, stats: BigIntStats }> {
    let handle: FileHandle | undefined
    try {
      handle = await open(locate(path), 'r')
      const stats = await handle.stat({ bigint: true })
      if (!stats.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EISDIR' })
      return { handle, stats }
    } catch (err) {
      await handle?.close()
      throw err instanceof StorageError ? err : toStorageError(err, path)
    }
  }

  return {
    description: `local directory ${root}`,

    async stat (path) {
      try {
        const s = await stat(locate(path), { bigint: true })
        if (!s.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EISDIR' })
        return propertiesOf(s)
      } catch (err) {
        throw err instanceof StorageError ? err : toStorageError(err, path)
      }
    },

    async read (path, options: ReadOptions): Promise<Readable> {
      // The open descriptor pins the version: a file replaced by rename keeps serving the old inode.
      const { handle, stats } = await openFile(path)
      if (etagOf(stats) !== options.etag) {
        await handle.close()
        throw new StorageError('changed', `blob "${path}" changed since it was looked up`, { status: 412 })
      }
      return handle.createReadStream({
        start: options.start ?? 0,
        ...(options.end !== undefined && { end: options.end }),
        highWaterMark: 256 * 1024
      })
    },

    async readText (path, ifNoneMatch): Promise<TextRead> {
      const { handle, stats } = await openFile(path)
      try {
        const etag = etagOf(stats)
        if (etag === ifNoneMatch) return { changed: false }
        if (stats.size > BigInt(MAX_TEXT_BYTES)) {
          throw new StorageError('too-large', `blob "${path}" is ${stats.size} bytes; the limit is ${MAX_TEXT_BYTES}`)
        }
        return { changed: true, etag, text: await handle.readFile('utf8') }
      } catch (err) {
        throw err instanceof StorageError ? err : toStorageError(err, path)
      } finally {
        await handle.close()
      }
    },

    async close () {}
  }
}
