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

/**
 * A body being read: a Readable, or any source with the same events and flow control (the
 * Azure store's raw undici bodies, which skip a stream layer).
 */
export interface ByteSource {
  on (event: 'data', listener: (chunk: Buffer) => void): unknown
  on (event: 'end', listener: () => void): unknown
  on (event: 'error', listener: (err: Error) => void): unknown
  pause (): unknown
  resume (): unknown
  destroy (): unknown
}

/** Opens a read of bytes start..end (inclusive) of the blob version being served. */
export type RangeReader = (start: number, end: number, signal: AbortSignal) => Promise<ByteSource>

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

/** A digest over the bytes in delivery order; `verify` before the last ones are let go. */
export interface StreamCheck {
  update (chunk: Buffer): void
  verify (): Error | undefined
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
  /**
   * A read already open at `start` (the lookup's own answer), used for the first chunk: only
   * that chunk's bytes are taken from it, then it is let go.
   */
  readonly first?: ByteSource
  /** Whether a failed read is worth trying again from its next byte (a read that ended early always is). */
  readonly retryable?: (err: unknown) => boolean
  /** Tries in a row without a byte between them before a chunk fails (default 4). */
  readonly attempts?: number
  /** Checks the whole range, in order: a mismatch fails the stream before its last bytes. */
  readonly check?: StreamCheck | undefined
  /** Called with every piece received from storage (for the metrics). */
  readonly onBytes?: (bytes: number) => void
}

interface Chunk {
  readonly start: number
  readonly end: number
  /** Bytes received so far (delivered or waiting in `buffers`). */
  received: number
  readonly buffers: Buffer[]
  /** Budget held for this chunk's bytes while they wait. */
  reserved: number
  source: ByteSource | undefined
  done: boolean
}

/** A read that ended before its last byte: read on from the next one. */
export class ShortReadError extends Error {
  override name = 'ShortReadError'
}

/** A read that sent more than asked: storage is not answering what was asked, never retried. */
export class OverlongReadError extends Error {
  override name = 'OverlongReadError'
}

export function parallelRead (opts: ParallelReadOptions): Readable {
  const { chunkBytes, connections, budget, readRange } = opts
  const attempts = opts.attempts ?? 4
  const controller = new AbortController()
  const chunks: Chunk[] = []
  for (let at = opts.start; at <= opts.end; at += chunkBytes) {
    chunks.push({ start: at, end: Math.min(opts.end, at + chunkBytes - 1), received: 0, buffers: [], reserved: 0, source: undefined, done: false })
  }
  let first = opts.first
  let head = 0
  let next = 0
  let wanted = false
  let finished = false

  // A high-water mark near a read's size: the client's socket, not this stream, paces the reads.
  const out = new Readable({
    highWaterMark: 256 * 1024,
    read () {
      wanted = true
      drain()
    },
    destroy (err, callback) {
      finished = true
      controller.abort()
      first?.destroy()
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

  /** One read of what the chunk still lacks; resolves when the chunk is complete. */
  function readOnce (chunk: Chunk, source: ByteSource, mayRunPast: boolean): Promise<void> {
    const length = chunk.end - chunk.start + 1
    chunk.source = source
    return new Promise<void>((resolve, reject) => {
      let settled = false
      const settle = (err?: Error): void => {
        if (settled) return
        settled = true
        if (err === undefined) resolve()
        else reject(err)
      }
      source.on('data', (data: Buffer) => {
        if (settled) return
        const left = length - chunk.received
        if (data.length > left && !mayRunPast) {
          source.destroy()
          settle(new OverlongReadError(`storage sent more than the ${length} bytes asked for at ${chunk.start}`))
          return
        }
        const part = data.length > left ? data.subarray(0, left) : data
        chunk.received += part.length
        opts.onBytes?.(part.length)
        chunk.buffers.push(part)
        if (chunk.received === length) {
          // The lookup's answer runs on past the first chunk: let it go.
          if (mayRunPast) source.destroy()
          settle()
        }
        if (chunks[head] === chunk) drain()
      })
      source.on('end', () => { settle(chunk.received < length ? new ShortReadError(`storage sent ${chunk.received} of the ${length} bytes asked for at ${chunk.start}`) : undefined) })
      source.on('error', (err) => { settle(err) })
      // The head waits on the client; the others read on into their reserved memory.
      if (chunks[head] === chunk && !wanted) source.pause()
      else source.resume()
    })
  }

  async function fetch (chunk: Chunk): Promise<void> {
    let failures = 0
    for (;;) {
      const before = chunk.received
      try {
        let source: ByteSource
        const opened = first
        if (opened !== undefined && chunk.start === opts.start && chunk.received === 0) {
          first = undefined
          source = opened
        } else {
          source = await readRange(chunk.start + chunk.received, chunk.end, controller.signal)
        }
        if (finished) { source.destroy(); return }
        await readOnce(chunk, source, source === opened)
        // Complete, but perhaps paused by the client's backpressure before storage's end arrived:
        // let it run to its end, so the connection finishes the response and can be reused.
        if (source !== opened) source.resume()
        chunk.source = undefined
        chunk.done = true
        drain()
        return
      } catch (err) {
        chunk.source?.destroy()
        chunk.source = undefined
        if (finished) return
        if (chunk.received > before) failures = 0
        failures++
        // A read that ended early is resumed from its next byte; one that sent too much never is.
        const again = err instanceof ShortReadError || (!(err instanceof OverlongReadError) && (opts.retryable?.(err) ?? false))
        if (!again || failures >= attempts) { fail(err); return }
        try {
          await wait(backoffDelay({ initialMs: 100, maxMs: 2000, jitter: 0.5 }, failures - 1), controller.signal)
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
        // An empty range has no last piece to hold back: check it here.
        const err = chunks.length === 0 ? opts.check?.verify() : undefined
        if (err !== undefined) { fail(err); return }
        finished = true
        out.push(null)
        return
      }
      const last = head === chunks.length - 1
      while (wanted && chunk.buffers.length > 0) {
        // With a check, the last piece waits until the range is complete and verified.
        if (last && !chunk.done && chunk.buffers.length === 1 && opts.check !== undefined) break
        const data = chunk.buffers.shift()
        if (data === undefined) break
        opts.check?.update(data)
        if (last && chunk.done && chunk.buffers.length === 0) {
          // The very last bytes: only once the whole range proved to be what was expected.
          const err = opts.check?.verify()
          if (err !== undefined) { fail(err); return }
        }
        if (!out.push(data)) wanted = false
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
