// Local directory backend: development, tests, and the pattern for other clouds' backends.
// A directory stands for one container; blob names are relative paths below it. It must never
// resolve a name outside its directory, and never read a whole file into memory (but the
// manifest, which is small and capped).

import { randomBytes } from 'node:crypto'
import { createWriteStream, existsSync } from 'node:fs'
import { link, mkdir, open, rename, rm, stat, writeFile } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import type { BigIntStats } from 'node:fs'
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path'
import { pipeline as pipe, Transform } from 'node:stream'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { Sha256Verifier } from './sha256.ts'
import { MAX_TEXT_BYTES, StorageError } from './types.ts'
import type { BlobProperties, ReadOptions, TextRead, WritableStore } from './types.ts'
import { errnoCode, messageOf } from '../lib/errors.ts'
import { backoffDelay, wait } from '../lib/backoff.ts'

function etagOf (s: BigIntStats): string {
  return `"${s.ino.toString(16)}-${s.size.toString(16)}-${s.mtimeNs.toString(16)}"`
}

function propertiesOf (s: BigIntStats): BlobProperties {
  return { size: Number(s.size), etag: etagOf(s), lastModified: new Date(Number(s.mtimeMs)) }
}

function toStorageError (err: unknown, path: string, root?: string): StorageError {
  const code = errnoCode(err)
  if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') {
    // As in Azure: a missing container directory is told apart from a missing blob.
    if (root !== undefined && code === 'ENOENT' && !existsSync(root)) {
      return new StorageError('not-found', `the container directory ${root} does not exist`, { code: 'ContainerNotFound', cause: err })
    }
    return new StorageError('not-found', `blob "${path}" does not exist`, { code, cause: err })
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new StorageError('denied', `no permission to read "${path}"`, { code, cause: err })
  }
  return new StorageError('failed', `reading "${path}" failed: ${messageOf(err)}`, { code, cause: err })
}

export function createLocalStore (directory: string): WritableStore {
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
      throw err instanceof StorageError ? err : toStorageError(err, path, root)
    }
  }

  /** Compare-and-swap among local writers: a lock file held while the version is checked and replaced. */
  async function writeLocked (path: string, text: string, ifMatch: string | null): Promise<string> {
    const full = locate(path)
    await mkdir(dirname(full), { recursive: true })
    const release = await lock(`${full}.lock`)
    try {
      let current: string | null = null
      try {
        current = etagOf(await stat(full, { bigint: true }))
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw toStorageError(err, path)
      }
      if (current !== ifMatch) {
        throw new StorageError('changed', `blob "${path}" ${current === null ? 'does not exist' : 'changed'} since it was read`, { status: 412 })
      }
      const temp = `${full}.${randomBytes(6).toString('hex')}.tmp`
      await writeFile(temp, text)
      await rename(temp, full)
      return etagOf(await stat(full, { bigint: true }))
    } finally {
      await release()
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
      const body = handle.createReadStream({
        start: options.start ?? 0,
        ...(options.end !== undefined && { end: options.end }),
        highWaterMark: 256 * 1024
      })
      return options.sha256 === undefined ? body : pipe(body, new Sha256Verifier(options.sha256), () => {})
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

    async writeText (path, text, ifMatch) {
      try {
        return await writeLocked(path, text, ifMatch)
      } catch (err) {
        if (err instanceof StorageError) throw err
        const code = errnoCode(err)
        throw new StorageError(code === 'EACCES' || code === 'EPERM' ? 'denied' : 'failed', `cannot write blob "${path}": ${messageOf(err)}`, { code, cause: err })
      }
    },

    async upload (path, data, options = {}) {
      const full = locate(path)
      await mkdir(dirname(full), { recursive: true })
      const temp = `${full}.${randomBytes(6).toString('hex')}.tmp`
      let sent = 0
      const progress = new Transform({
        transform (chunk: Buffer, _encoding, callback) {
          sent += chunk.length
          options.onProgress?.(sent)
          callback(null, chunk)
        }
      })
      try {
        await pipeline(data, progress, createWriteStream(temp))
        // The version written, read from the file we wrote (the name may be replaced right after).
        const written = propertiesOf(await stat(temp, { bigint: true }))
        if (options.ifNoneMatch !== undefined) {
          // link() fails if the name exists: an atomic create-only, as If-None-Match: * in Azure.
          try {
            await link(temp, full)
          } catch (err) {
            if (errnoCode(err) === 'EEXIST') throw new StorageError('changed', `blob "${path}" already exists`, { status: 409 })
            throw err
          }
          await rm(temp, { force: true })
          return written
        }
        if (options.ifMatch !== undefined) {
          const release = await lock(`${full}.lock`)
          try {
            const current = await stat(full, { bigint: true }).then(etagOf, () => null)
            if (current !== options.ifMatch) throw new StorageError('changed', `blob "${path}" is no longer the version expected`, { status: 412 })
            await rename(temp, full)
          } finally {
            await release()
          }
          return written
        }
        await rename(temp, full)
        return written
      } catch (err) {
        throw err instanceof StorageError ? err : toStorageError(err, path)
      } finally {
        await rm(temp, { force: true })
      }
    },

    async createContainer () {
      if (existsSync(root)) return false
      // Only the container directory: the directory STORAGE names must exist already.
      await mkdir(root)
      return true
    },

    async remove (path, ifMatch) {
      const full = locate(path)
      const release = await lock(`${full}.lock`)
      try {
        const current = await stat(full, { bigint: true }).then(etagOf, () => null)
        if (current === null) return
        if (current !== ifMatch) throw new StorageError('changed', `blob "${path}" is no longer the version expected`, { status: 412 })
        await rm(full)
      } finally {
        await release()
      }
    },

    async close () {}
  }
}

async function lock (path: string): Promise<() => Promise<void>> {
  const deadline = Date.now() + 30_000
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(path, 'wx')
      await handle.close()
      return () => rm(path, { force: true })
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err
      // A lock older than 30 s belongs to a writer that died.
      const age = await stat(path).then((s) => Date.now() - s.mtimeMs, () => 0)
      if (age > 30_000) await rm(path, { force: true })
      if (Date.now() > deadline) throw new StorageError('timeout', `could not lock ${path} within 30 s`)
      await wait(backoffDelay({ initialMs: 25, maxMs: 250, jitter: 0.8 }, attempt))
    }
  }
}
