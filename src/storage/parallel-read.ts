// Reads one large blob (or a range of it) over several storage connections at once and hands
// the bytes over strictly in order, because a storage account limits what one connection carries
// far below what one blob can serve (azcopy reads in parallel ranges for the same reason).
//
// The range [start, end] is cut into chunks. The chunk being delivered (the head) streams through
// as it arrives, under the client's backpressure; up to `connections - 1` chunks after it are read
// ahead at the same time, each into memory reserved from a ReadAheadBudget shared by the whole
// process. A download that cannot get budget reads with fewer connections (at worst only its head,
// which needs none), so it never fails for want of memory, and a slow client holds back only its
// own window. Each chunk must arrive exactly as long as asked; a chunk whose connection breaks is
// read again from its next byte, on its own. A consumer that goes away cancels every read in
// flight and returns the budget.
//
// It must never deliver a byte out of order, never hold more than its window, and never outlive
// the stream it returns. What a chunk read is (the request, its checks, the version it is pinned
// to) is the caller's `readRange`.

import { Readable } from 'node:stream'
import { backoffDelay, wait } from '../lib/backoff.ts'

/** Opens a read of bytes start..end (inclusive) of the blob version being served. */
export type RangeReader = (start: number, end: number, signal: AbortSignal) => Promise<Readable>

/** Memory for read-ahead, shared by every download of a process. */
export class ReadAheadBudget {
  readonly totalBytes: number
  #inUse = 0

  constructor (totalBytes: number) {
    this.totalBytes = totalBytes
  }

  get inUse (): number { return this.#inUse }

  /** Takes `bytes` if that much is free; says whether it did. */
  tryAcquire (bytes: number): boolean {
    if (this.#inUse + bytes > this.totalBytes) return false
    this.#inUse += bytes
    return true
  }

  release (bytes: number): void {
    this.#inUse = Math.max(0, this.#inUse - bytes)
  }
}

export interface ParallelReadOptions {
  /** First byte, inclusive. */
  readonly start: number
  /** Last byte, inclusive. */
  readonly end: number
  readonly chunkBytes: number
  /** Reads in flight at most, the head's included (1: one read after another). */
  readonly connections: number
  readonly budget: ReadAheadBudget
  readonly readRange: RangeReader
  /** Whether a failed chunk read is worth trying again from its next byte (default: never). */
  readonly retryable?: (err: unknown) => boolean
  /** Tries per chunk read, the first included (default 4). */
  readonly attempts?: number
  /** Called with every chunk read opened, for the metrics. */
  readonly onRequest?: () => void
}

interface Chunk {
  readonly start: number
  readonly end: number
  /** Bytes received so far (delivered or waiting in `buffers`). */
  received: number
  readonly buffers: Buffer[]
  /** Budget held for this chunk's bytes while they wait. */
  reserved: number
  source: Readable | undefined
  done: boolean
}

export class ShortReadError extends Error {
  override name = 'ShortReadError'
}

export function parallelRead (opts: ParallelReadOptions): Readable {
  const { chunkBytes, connections, budget, readRange } = opts
  const attempts = opts.attempts ?? 4
  const controller = new AbortController()
  const chunks: Chunk[] = []
  for (let at = opts.start; at <= opts.end; at += chunkBytes) {
    chunks.push({ start: at, end: Math.min(opts.end, at + chunkBytes - 1), received: 0, buffers: [], reserved: 0, source: undefined, done: false })
  }
  let head = 0
  let next = 0
  let wanted = false
  let finished = false

  const out = new Readable({
    read () {
      wanted = true
      drain()
    },
    destroy (err, callback) {
      finished = true
      controller.abort()
      for (const chunk of chunks) {
        chunk.source?.destroy()
        chunk.buffers.length = 0
        budget.release(chunk.reserved)
        chunk.reserved = 0
      }
      callback(err)
    }
  })

  function fail (err: unknown): void {
    if (!finished) out.destroy(err instanceof Error ? err : new Error(String(err)))
  }

  /** Starts the reads the window and the budget allow. */
  function launch (): void {
    while (next < head + connections) {
      const chunk = chunks[next]
      if (chunk === undefined || finished) return
      if (next !== head) {
        const length = chunk.end - chunk.start + 1
        if (!budget.tryAcquire(length)) return
        chunk.reserved = length
      }
      next++
      fetch(chunk).catch(fail)
    }
  }

  async function fetch (chunk: Chunk): Promise<void> {
    const length = chunk.end - chunk.start + 1
    for (let attempt = 1; ; attempt++) {
      try {
        opts.onRequest?.()
        const source = await readRange(chunk.start + chunk.received, chunk.end, controller.signal)
        if (finished) { source.destroy(); return }
        chunk.source = source
        await new Promise<void>((resolve, reject) => {
          source.on('data', (data: Buffer) => {
            chunk.received += data.length
            if (chunk.received > length) {
              source.destroy()
              reject(new ShortReadError(`storage sent more than the ${length} bytes asked for at ${chunk.start}`))
              return
            }
            chunk.buffers.push(data)
            if (chunks[head] === chunk) drain()
          })
          source.once('end', () => {
            if (chunk.received < length) reject(new ShortReadError(`storage sent ${chunk.received} of the ${length} bytes asked for at ${chunk.start}`))
            else resolve()
          })
          source.once('error', reject)
          source.once('close', () => { if (!source.readableEnded) reject(new ShortReadError(`storage closed the read at ${chunk.start + chunk.received}`)) })
          // The head waits on the client; the others read on into their reserved memory.
          if (chunks[head] === chunk && !wanted) source.pause()
        })
        chunk.source = undefined
        chunk.done = true
        drain()
        return
      } catch (err) {
        chunk.source = undefined
        if (finished) return
        // A read that ended early is resumed from its next byte; one that sent too much never is.
        const again = err instanceof ShortReadError ? chunk.received < length : (opts.retryable?.(err) ?? false)
        if (!again || attempt >= attempts) { fail(err); return }
        try {
          await wait(backoffDelay({ initialMs: 100, maxMs: 2000, jitter: 0.5 }, attempt - 1), controller.signal)
        } catch {
          return
        }
      }
    }
  }

  /** Hands the head's bytes to the client while it wants them; moves on when the head is done. */
  function drain (): void {
    for (;;) {
      if (finished) return
      const chunk = chunks[head]
      if (chunk === undefined) {
        finished = true
        out.push(null)
        return
      }
      while (wanted && chunk.buffers.length > 0) {
        const data = chunk.buffers.shift()
        if (data !== undefined && !out.push(data)) wanted = false
      }
      if (!wanted) {
        chunk.source?.pause()
        return
      }
      if (!chunk.done) {
        chunk.source?.resume()
        launch()
        return
      }
      budget.release(chunk.reserved)
      chunk.reserved = 0
      head++
      launch()
    }
  }

  launch()
  return out
}

/** What takeFirst reads from: a Readable, or any body with the same events and flow control. */
export interface ByteSource {
  on (event: 'data', listener: (chunk: Buffer) => void): unknown
  on (event: 'end', listener: () => void): unknown
  on (event: 'error', listener: (err: Error) => void): unknown
  pause (): unknown
  resume (): unknown
  destroy (): unknown
}

/**
 * The first `length` bytes of `source` as a stream of their own; `source` is destroyed once they
 * are through (a read that asked for more gives up its connection rather than be drained).
 */
export function takeFirst (source: ByteSource, length: number): Readable {
  let left = length
  const out = new Readable({
    read () { source.resume() },
    destroy (err, callback) {
      source.destroy()
      callback(err)
    }
  })
  source.on('data', (data: Buffer) => {
    if (left <= 0) return
    const part = data.length > left ? data.subarray(0, left) : data
    left -= part.length
    const more = out.push(part)
    if (left === 0) {
      out.push(null)
      source.destroy()
    } else if (!more) {
      source.pause()
    }
  })
  source.on('end', () => { if (left > 0) out.destroy(new ShortReadError(`the read ended ${left} bytes short`)) })
  source.on('error', (err) => { if (left > 0) out.destroy(err) })
  source.pause()
  return out
}
