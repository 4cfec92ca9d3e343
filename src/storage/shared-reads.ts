// Two ways requests for one blob share storage work, neither of which keeps a blob's bytes:
//
// - Properties are remembered for a short time, so a burst of downloads of one package costs one
//   storage request instead of one each: a read that is its own lookup (`open`) fills them from
//   its answer, and reads that arrive while it is under way wait for those properties instead of
//   asking storage too. Safe for the bytes: every read stays pinned to the
//   ETag, so a blob replaced within the TTL fails the pinned read ("changed"), which drops the
//   entry, and the route looks the blob up again. Only answers made from properties alone (HEAD,
//   304 to a conditional GET, 416) may be up to `statTtlMs` old; a body never is.
// - Whole reads of a small blob asked for while the same read (same version, same check) is in
//   flight join it instead of starting another: the bytes come from one storage request begun at
//   most one request ago, and are dropped once every joiner has them (collapsed forwarding, as
//   caching proxies do). Large blobs are always streamed on their own, never held.

import { Readable } from 'node:stream'
import { StorageError, isStorageError } from './types.ts'
import type { BlobProperties, BlobStore, OpenOptions, OpenedBlob, ReadOptions } from './types.ts'

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
  /** Properties an `open` under way will know, by path. */
  const opening = new Map<string, Promise<BlobProperties>>()

  function fresh (path: string): BlobProperties | undefined {
    const hit = known.get(path)
    return hit !== undefined && hit.until > Date.now() ? hit.props : undefined
  }

  function remember (path: string, props: BlobProperties): void {
    if (statTtlMs <= 0) return
    if (known.size >= maxEntries) known.clear()
    known.set(path, { props, until: Date.now() + statTtlMs })
  }

  const keyOf = (path: string, etag: string, sha256: string | undefined): string => `${etag}\n${sha256 ?? ''}\n${path}`

  /** Reads a small blob whole once for everyone asking while it is read. */
  function sharedWhole (path: string, opts: ReadOptions, size: number): Promise<Buffer> {
    const key = keyOf(path, opts.etag, opts.sha256)
    let shared = inFlight.get(key)
    if (shared === undefined) {
      shared = readWhole(path, opts, size).finally(() => { inFlight.delete(key) })
      inFlight.set(key, shared)
    }
    return shared
  }

  /** A read of known properties: ranges resolved against them, small whole reads shared. */
  async function openKnown (path: string, props: BlobProperties, opts: OpenOptions): Promise<OpenedBlob> {
    const start = opts.start ?? 0
    const ranged = opts.start !== undefined || opts.end !== undefined
    if (ranged && start >= props.size) throw new StorageError('failed', `bytes ${start}- are past the end of blob "${path}"`, { status: 416 })
    const end = Math.min(opts.end ?? props.size - 1, props.size - 1)
    const whole = start === 0 && end === props.size - 1
    const read = { etag: props.etag, size: props.size, ...(!whole && { start, end }), ...(whole && opts.sha256 !== undefined && { sha256: opts.sha256 }) }
    const body = whole && props.size <= coalesceMaxBytes
      ? bufferStream(await sharedWhole(path, read, props.size))
      : await readThrough(path, read)
    return { props, start, end, body }
  }

  async function readThrough (path: string, opts: ReadOptions): Promise<Readable> {
    try {
      return await store.read(path, opts)
    } catch (err) {
      if (isStorageError(err) && (err.kind === 'changed' || err.kind === 'not-found')) known.delete(path)
      throw err
    }
  }

  async function readWhole (path: string, opts: ReadOptions, size: number): Promise<Buffer> {
    return collect(await readThrough(path, opts), size, path)
  }

  async function collect (body: Readable, size: number, path: string): Promise<Buffer> {
    const chunks: Buffer[] = []
    let length = 0
    for await (const chunk of body) {
      const data: unknown = chunk
      if (!Buffer.isBuffer(data)) throw new StorageError('failed', `storage sent text, not bytes, for blob "${path}"`)
      length += data.length
      if (length > size) throw new StorageError('failed', `storage sent more than the ${size} bytes blob "${path}" has`)
      chunks.push(data)
    }
    return Buffer.concat(chunks, length)
  }

  return {
    description: store.description,
    ...(store.stats !== undefined && { stats: store.stats }),
    async stat (path) {
      const hit = fresh(path)
      if (hit !== undefined) return hit
      const props = await store.stat(path)
      remember(path, props)
      return props
    },
    ...(store.open !== undefined && {
      async open (path: string, opts: OpenOptions): Promise<OpenedBlob> {
        const open = store.open
        if (open === undefined) throw new Error('unreachable: open checked above')
        // No await before `opening` is set: concurrent opens must see the first one under way.
        let props = fresh(path)
        const underWay = props === undefined ? opening.get(path) : undefined
        if (underWay !== undefined) props = await underWay.catch(() => undefined)
        if (props !== undefined) {
          try {
            return await openKnown(path, props, opts)
          } catch (err) {
            // Replaced since it was looked up: this read asks storage itself.
            if (!isStorageError(err) || err.kind !== 'changed') throw err
            props = undefined
          }
        }
        const pending = open.call(store, path, opts)
        const lookup = pending.then((o) => o.props)
        if (!opening.has(path)) {
          opening.set(path, lookup)
          const done = (): void => { if (opening.get(path) === lookup) opening.delete(path) }
          lookup.then(done, done)
        }
        let opened: OpenedBlob
        try {
          opened = await pending
        } catch (err) {
          if (isStorageError(err) && (err.kind === 'changed' || err.kind === 'not-found')) known.delete(path)
          throw err
        }
        remember(path, opened.props)
        const whole = opened.start === 0 && opened.end === opened.props.size - 1 && opts.start === undefined
        if (!whole || opened.props.size > coalesceMaxBytes) return opened
        // Small: its bytes are shared with whole reads of this version that come while it arrives.
        const key = keyOf(path, opened.props.etag, opts.sha256)
        const shared = collect(opened.body, opened.props.size, path).finally(() => { inFlight.delete(key) })
        if (!inFlight.has(key)) inFlight.set(key, shared)
        return { ...opened, body: bufferStream(await shared) }
      }
    }),
    async read (path, opts) {
      const props = known.get(path)?.props
      const whole = opts.start === undefined && opts.end === undefined
      if (!whole || props === undefined || props.etag !== opts.etag || props.size > coalesceMaxBytes) {
        return readThrough(path, opts)
      }
      return bufferStream(await sharedWhole(path, opts, props.size))
    },
    readText: (path, ifNoneMatch) => store.readText(path, ifNoneMatch),
    async writeText (path, text, ifMatch) {
      known.delete(path)
      return store.writeText(path, text, ifMatch)
    },
    async upload (path, data, opts) {
      known.delete(path)
      return store.upload(path, data, opts)
    },
    close: () => store.close()
  }
}
