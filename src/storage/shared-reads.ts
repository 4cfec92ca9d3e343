// Two ways requests for one blob share storage work, neither of which keeps a blob's bytes:
//
// - Properties are remembered for a short time, so a burst of downloads of one package costs one
//   properties request instead of one each. Safe for the bytes: every read stays pinned to the
//   ETag, so a blob replaced within the TTL fails the pinned read ("changed"), which drops the
//   entry, and the route looks the blob up again. Only answers made from properties alone (HEAD,
//   304 to a conditional GET, 416) may be up to `statTtlMs` old; a body never is.
// - Whole reads of a small blob asked for while the same read (same version, same check) is in
//   flight join it instead of starting another: the bytes come from one storage request begun at
//   most one request ago, and are dropped once every joiner has them (collapsed forwarding, as
//   caching proxies do). Large blobs are always streamed on their own, never held.

import { Readable } from 'node:stream'
import { StorageError, isStorageError } from './types.ts'
import type { BlobProperties, BlobStore, ReadOptions } from './types.ts'

export interface SharingOptions {
  /** How long looked-up properties are reused (0: every stat asks storage). */
  readonly statTtlMs: number
  /** Blobs up to this size share concurrent whole reads (0: never). */
  readonly coalesceMaxBytes: number
  readonly maxEntries?: number
}

/** A stream of bytes already in memory (one small blob). */
function bufferStream (bytes: Buffer): Readable {
  let sent = false
  return new Readable({
    read () {
      if (!sent && bytes.length > 0) this.push(bytes)
      sent = true
      this.push(null)
    }
  })
}

export function withSharedReads (store: BlobStore, options: SharingOptions): BlobStore {
  const { statTtlMs, coalesceMaxBytes } = options
  const maxEntries = options.maxEntries ?? 1024
  const known = new Map<string, { props: BlobProperties, until: number }>()
  const inFlight = new Map<string, Promise<Buffer>>()

  async function readThrough (path: string, opts: ReadOptions): Promise<Readable> {
    try {
      return await store.read(path, opts)
    } catch (err) {
      if (isStorageError(err) && (err.kind === 'changed' || err.kind === 'not-found')) known.delete(path)
      throw err
    }
  }

  async function readWhole (path: string, opts: ReadOptions, size: number): Promise<Buffer> {
    const chunks: Buffer[] = []
    let length = 0
    for await (const chunk of await readThrough(path, opts)) {
      length += (chunk as Buffer).length
      if (length > size) throw new StorageError('failed', `storage sent more than the ${size} bytes blob "${path}" has`)
      chunks.push(chunk as Buffer)
    }
    return Buffer.concat(chunks, length)
  }

  return {
    description: store.description,
    async stat (path) {
      const hit = known.get(path)
      if (hit !== undefined && hit.until > Date.now()) return hit.props
      const props = await store.stat(path)
      if (statTtlMs > 0) {
        if (known.size >= maxEntries) known.clear()
        known.set(path, { props, until: Date.now() + statTtlMs })
      }
      return props
    },
    async read (path, opts) {
      const props = known.get(path)?.props
      const whole = opts.start === undefined && opts.end === undefined
      if (!whole || props === undefined || props.etag !== opts.etag || props.size > coalesceMaxBytes) {
        return await readThrough(path, opts)
      }
      const key = `${opts.etag}\n${opts.sha256 ?? ''}\n${path}`
      let shared = inFlight.get(key)
      if (shared === undefined) {
        shared = readWhole(path, opts, props.size).finally(() => { inFlight.delete(key) })
        inFlight.set(key, shared)
      }
      return bufferStream(await shared)
    },
    readText: (path, ifNoneMatch) => store.readText(path, ifNoneMatch),
    async writeText (path, text, ifMatch) {
      known.delete(path)
      return await store.writeText(path, text, ifMatch)
    },
    async upload (path, data, opts) {
      known.delete(path)
      return await store.upload(path, data, opts)
    },
    close: () => store.close()
  }
}
