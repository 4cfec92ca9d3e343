// Reads one large blob (or a range of it) over several storage connections at once and hands
// the bytes over strictly in order, because a storage account limits what one connection carries
// far below what one blob can serve (azcopy reads in parallel ranges for the same reason).
//
// The range [start, end] is cut into chunks. The chunk being delivered (the head) streams through
// as it arrives, under the client's backpressure; chunks after it (up to `connections` of them,
// with at most `connections` reads in flight in all) are read ahead, each into memory from a
// ReadAheadBudget shared by the whole process. A download long enough to measure first tests
// whether that pays (see minSpeedup). A download that cannot get budget reads with fewer
// connections (at worst only its head, which needs none), so it never fails for want of memory,
// and a slow client holds back only its own window. Read-ahead is handed to the response as
// views of the pooled buffers when the route pipes the body straight into it (pipedInto),
// copied out otherwise.
// Each chunk must arrive exactly as long as asked; a chunk whose connection breaks is read again
// from its next byte, on its own. A consumer that goes away cancels every read in flight and
// returns the budget.
//
// It must never deliver a byte out of order, never hold more than its window, and never outlive
// the stream it returns. What a chunk read is (the request, its checks, the version it is pinned
// to) is the caller's `readRange`.

import type { EventLoopUtilization } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import { batchWrites, whenPiped } from './outlet.ts'
import type { Connection, Outlet } from './outlet.ts'
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

/**
 * Gives a buffer's memory back at once by detaching it (`ArrayBuffer.prototype.transfer`, Node
 * 21 and later; every view of it is empty afterwards). On Node 20 it waits for the collector.
 */
function freeNow (buffer: Buffer): void {
  const memory: ArrayBufferLike & { transfer?: (length: number) => ArrayBuffer } = buffer.buffer
  memory.transfer?.(0)
}

/**
 * Memory for read-ahead, shared by every download of a process: a pool of buffers, allocated on
 * first need and then reused, never more than `totalBytes` in all. Reused rather than freed
 * because a buffer that lives a few hundred milliseconds is promoted by V8's collector and only
 * freed by a full collection: per-chunk buffers (or storage's own pieces, held) made parallel
 * reads cost a third more CPU in collections and held dead read-ahead until one ran.
 */
export class ReadAheadBudget {
  readonly totalBytes: number
  readonly #idleMs: number
  #inUse = 0
  #allocated = 0
  readonly #free: Buffer[] = []
  #trim: NodeJS.Timeout | undefined

  /**
   * `idleMs`: how long the pool keeps its buffers once nothing is lent out (default 2 s: a
   * script's downloads one after another reuse them; allocating them again costs ~1 ms).
   */
  constructor (totalBytes: number, idleMs = 2_000) {
    this.totalBytes = totalBytes
    this.#idleMs = idleMs
  }

  /** Bytes lent out now (the read-ahead metric). */
  get inUse (): number { return this.#inUse }

  /** Bytes the pool holds, lent out or free: what read-ahead costs the process in memory. */
  get allocated (): number { return this.#allocated }

  #freeBytes (): number { return this.#free.reduce((n, b) => n + b.length, 0) }

  /** A buffer of exactly `bytes` (a view of a pooled one) if the budget allows; undefined if not. */
  tryAcquire (bytes: number): Buffer | undefined {
    if (bytes > this.totalBytes) return undefined
    // The smallest free buffer that fits: a large one stays for a large ask.
    let at = -1
    this.#free.forEach((b, i) => { if (b.length >= bytes && (at < 0 || b.length < (this.#free[at]?.length ?? Infinity))) at = i })
    if (at < 0 && this.#allocated + bytes > this.totalBytes) {
      // Free buffers too small for this size make room for one that fits, if that can be enough.
      if (this.#allocated - this.#freeBytes() + bytes > this.totalBytes) return undefined
      while (this.#allocated + bytes > this.totalBytes) {
        const dropped = this.#free.pop()
        if (dropped === undefined) break
        this.#allocated -= dropped.length
        freeNow(dropped)
      }
    }
    let pooled = at >= 0 ? this.#free.splice(at, 1)[0] : undefined
    if (pooled === undefined) {
      pooled = Buffer.allocUnsafeSlow(bytes)
      this.#allocated += bytes
    }
    // In use again: the trim waits for the next time nothing is lent out.
    clearTimeout(this.#trim)
    this.#inUse += pooled.length
    return pooled.length === bytes ? pooled : pooled.subarray(0, bytes)
  }

  /**
   * Takes back a buffer from tryAcquire. No view of it may be in use any more: its bytes were
   * copied out, or handed on and have since left the process (see whenPiped in parallelRead).
   */
  release (buffer: Buffer): void {
    const pooled = buffer.byteOffset === 0 && buffer.buffer.byteLength > buffer.length ? Buffer.from(buffer.buffer, 0, buffer.buffer.byteLength) : buffer
    this.#inUse = Math.max(0, this.#inUse - pooled.length)
    this.#free.push(pooled)
    if (this.#inUse === 0) {
      // An idle server (a node's scripts done) does not keep the pool: its memory goes back now,
      // not at V8's next full collection, which an idle process may not run for a long time.
      clearTimeout(this.#trim)
      this.#trim = setTimeout(() => {
        this.#allocated -= this.#freeBytes()
        for (const b of this.#free.splice(0)) freeNow(b)
      }, this.#idleMs).unref()
    }
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
  /** How long after a break a chunk may take to be reading again before the stream fails (default: no bound but `attempts`). */
  readonly resumeWithinMs?: number
  /** Checks the whole range, in order: a mismatch fails the stream before its last bytes. */
  readonly check?: StreamCheck | undefined
  /** Called with every piece received from storage (for the metrics). */
  readonly onBytes?: (bytes: number) => void
  /**
   * How many times faster than one read the parallel reads must be to go on (default 1.5).
   * Measured once, on a range of more than 4 + 4 × `connections` chunks: four chunks' worth alone,
   * then every connection until two chunks per connection have gone to the client. Both sides
   * count bytes handed to the client, not bytes received: read-ahead fills its budget faster
   * than anything downstream takes it, which made parallel reads look faster to a slow client
   * or a busy process than they were. Below it (storage, this process or the client, not one
   * connection, is the limit), the rest is one read. A shorter range is read in parallel
   * untested (a verdict would come too late to matter). An event loop too busy during the first
   * chunk for any reading to be `minSpeedup` times faster (see `halfway` below) skips the test.
   */
  readonly minSpeedup?: number | undefined
}

interface Chunk {
  readonly start: number
  readonly end: number
  /** Bytes received so far (delivered or waiting). */
  received: number
  /**
   * A chunk read ahead of its client: its bytes are copied into this buffer from the budget's
   * pool as they arrive (storage's pieces die young). They are handed on as views of it when the
   * stream is piped into its outlet (pipedInto), and copied out otherwise, so that a pooled buffer is
   * never reused while a byte of it may still be waiting to be sent.
   */
  copy: Buffer | undefined
  /** Bytes of `copy` handed to the client so far. */
  delivered: number
  /** A chunk read as the head (nothing reserved): storage's pieces, handed on as they came. */
  readonly pieces: Buffer[]
  source: ByteSource | undefined
  /** Its source was paused here, waiting on the client (resumed only then: not once a piece). */
  held: boolean
  done: boolean
}

/** The most handed to the client in one copied piece from a read-ahead buffer. */
const PIECE_BYTES = 64 * 1024
/** The most handed on in one view of a read-ahead buffer (lent: no copy to bound). */
const LENT_PIECE_BYTES = 256 * 1024

/** A read that ended before its last byte: read on from the next one. */
export class ShortReadError extends Error {
  override name = 'ShortReadError'
}

/** A read that sent more than asked: storage is not answering what was asked, never retried. */
export class OverlongReadError extends Error {
  override name = 'OverlongReadError'
}

const newChunk = (start: number, end: number): Chunk => ({ start, end, received: 0, copy: undefined, delivered: 0, pieces: [], source: undefined, held: false, done: false })

export function parallelRead (opts: ParallelReadOptions): Readable {
  const { chunkBytes, connections, budget, readRange } = opts
  const attempts = opts.attempts ?? 4
  const minSpeedup = opts.minSpeedup ?? 1.5
  const controller = new AbortController()
  const chunks: Chunk[] = []
  // The speed test (below) reads a first chunk of four chunks' size alone, then judges two
  // chunks per connection, when there is enough after that to be worth measuring: each side
  // over two chunks' time per connection, so that a range's time to first byte (tens of ms on
  // a busy account) weighs no more on one side than on the other, even with small chunks.
  const testing = minSpeedup > 0 && opts.end - opts.start + 1 > (4 + 4 * connections) * chunkBytes
  for (let at = opts.start; at <= opts.end;) {
    const size = testing && at === opts.start ? 4 * chunkBytes : chunkBytes
    chunks.push(newChunk(at, Math.min(opts.end, at + size - 1)))
    at += size
  }
  let first = opts.first
  let head = 0
  let next = 0
  let inFlight = 0
  let wanted = false
  let finished = false
  // Set once piped into a response (pipedInto): read-ahead is handed on as views, and each buffer
  // waits in `lent` until every byte pushed before it was given back has left (`until`: the
  // bytes pushed by then); pushes are batched per turn of the event loop (`batch`).
  let outlet: Outlet | undefined
  let connection: Connection | undefined
  let batch: (() => void) | undefined
  const lent: Array<{ readonly buffer: Buffer, readonly until: number }> = []
  let pushed = 0
  // The speed test: the first chunk alone, then every connection; `allowed` reads at a time.
  // One read's speed is taken over the second half of the first chunk: the first bytes of a
  // download carry the start's costs (a new connection, and in a process just started, code
  // not yet optimized, which made a half-chunk measure too low and parallel reads look good).
  // So is how busy the event loop was meanwhile, with this download and everything else the
  // process does: a loop busy a fraction u of the time delivers at most 1/u times as much
  // however it reads, and parallel reads cost more per byte, so when 1/u < minSpeedup the process
  // is too near its limit for them to pay (they would only take from other work) and they are
  // not tried. A read that never leaves the loop idle is the process's limit itself (u = 1).
  let halfway: { readonly at: number, readonly bytes: number, readonly loop: EventLoopUtilization } | undefined
  let allowed = testing ? 1 : connections
  // The parallel side is timed from its first byte: its new connections' set-up is the start's
  // cost too, and would weigh most where connections are few.
  let probe: { at: number | undefined, from: number, readonly single: number, most: number } | undefined

  // A high-water mark near a read's size: the client's socket, not this stream, paces the reads.
  const out = new Readable({
    highWaterMark: 64 * 1024,
    read () {
      wanted = true
      reclaim()
      measure()
      drain()
    },
    destroy (err, callback) {
      finished = true
      controller.abort()
      first?.destroy()
      for (const chunk of chunks) {
        chunk.source?.destroy()
        chunk.pieces.length = 0
        giveBack(chunk)
      }
      callback(err)
      reclaim()
    }
  })
  const events = ['drain', 'finish', 'close'] as const
  // Piped straight into a response, read-ahead is lent to it: handed on as views of the pooled
  // buffers instead of copies, each buffer back in the pool only once none of its bytes can still
  // be waiting, in this stream or in the outlet, or the connection is closed. (A destroyed
  // response is no proof: on Node 24 a pipelined one still sends what it had queued.) A copy of
  // every byte was as much garbage again as storage's own pieces: a fifth more peak RSS and up
  // to twice the CPU in collections with parallel reads on.
  whenPiped(out, (to, under) => {
    if (finished) return
    outlet = to
    connection = under
    batch = batchWrites(to)
    for (const event of events) to.on(event, reclaim)
    under.on('close', reclaim)
  })

  function giveBack (chunk: Chunk): void {
    if (chunk.copy === undefined) return
    // A buffer none of whose bytes went out has no view anywhere.
    if (outlet === undefined || chunk.delivered === 0) budget.release(chunk.copy)
    else lent.push({ buffer: chunk.copy, until: pushed })
    chunk.copy = undefined
  }

  /**
   * Lent buffers go back to the pool once their bytes have left: bytes leave in the order pushed,
   * and what has not yet left is at most what waits in this stream plus what the outlet holds
   * (its count may include bytes of its own, such as headers: then this errs on the safe side).
   * What waits in this stream counts even once it is destroyed (a read under way may still emit
   * a chunk). A closed connection holds nothing.
   */
  function reclaim (): void {
    if (outlet === undefined) return
    // A closed connection: everything; otherwise what has left.
    const left = connection?.destroyed === true ? Infinity : pushed - out.readableLength - outlet.writableLength
    for (let oldest = lent[0]; oldest !== undefined && oldest.until <= left; oldest = lent[0]) {
      lent.shift()
      budget.release(oldest.buffer)
    }
    // Done and nothing lent: the listeners go (a keep-alive connection serves many downloads).
    if (finished && lent.length === 0) {
      for (const event of events) outlet.off(event, reclaim)
      connection?.off('close', reclaim)
    }
  }

  function fail (err: unknown): void {
    if (!finished) out.destroy(err instanceof Error ? err : new Error(String(err)))
  }

  /** Whether a connection is free for the next chunk, within the window (budget aside). */
  const mayStart = (): boolean => !finished && inFlight < allowed && next <= head + connections && next < chunks.length

  /**
   * Starts the reads that the connections allowed, the window and the budget permit: no chunk
   * further than `connections` past the head, so a connection whose chunk is done can start the
   * next one while the head is still arriving.
   */
  function launch (): void {
    if (!mayStart()) return
    reclaim()
    while (mayStart()) {
      const chunk = chunks[next]
      if (chunk === undefined) return
      if (next !== head) {
        // The rest as one read (after a speed test that found no gain) waits to be the head.
        const length = chunk.end - chunk.start + 1
        if (length > chunkBytes) return
        chunk.copy = budget.tryAcquire(length)
        if (chunk.copy === undefined) return
      }
      next++
      inFlight++
      if (probe !== undefined) probe.most = Math.max(probe.most, inFlight)
      fetch(chunk).catch(fail)
    }
  }

  /** Judges the speed test once enough has gone to the client; below `minSpeedup`, the rest is one read. */
  function measure (): void {
    if (probe?.at === undefined) return
    if (pushed - probe.from < 2 * connections * chunkBytes) return
    const speedup = (pushed - probe.from) / (performance.now() - probe.at) / probe.single
    const most = probe.most
    probe = undefined
    // Without every connection in flight at some point (the budget was held by other downloads),
    // the test measured something else: no verdict.
    if (speedup >= minSpeedup || most < connections) return
    readRestAsOne()
  }

  /** The speed test's verdict against parallel reads: what is not yet asked for is one read. */
  function readRestAsOne (): void {
    allowed = 1
    const rest = chunks[next]
    if (rest !== undefined) chunks.splice(next, chunks.length - next, newChunk(rest.start, opts.end))
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
        // Nothing after the end: the chunk's pooled buffer may be someone else's by now.
        if (settled || finished) return
        const left = length - chunk.received
        if (data.length > left && !mayRunPast) {
          source.destroy()
          settle(new OverlongReadError(`storage sent more than the ${length} bytes asked for at ${chunk.start}`))
          return
        }
        const part = data.length > left ? data.subarray(0, left) : data
        if (chunk.copy !== undefined) part.copy(chunk.copy, chunk.received)
        else chunk.pieces.push(part)
        chunk.received += part.length
        if (halfway === undefined && chunk === chunks[0] && chunk.received * 2 >= length) halfway = { at: performance.now(), bytes: pushed, loop: performance.eventLoopUtilization() }
        opts.onBytes?.(part.length)
        if (chunk.received === length) {
          // The lookup's answer runs on past the first chunk: let it go. A range runs to its
          // end (even if the client holds the head back), so its connection is free for the next.
          if (mayRunPast) {
            source.destroy()
            settle()
          } else {
            chunk.held = false
            source.resume()
          }
        }
        if (probe !== undefined && probe.at === undefined) {
          probe.at = performance.now()
          probe.from = pushed
        } else {
          measure()
        }
        if (chunks[head] === chunk) drain()
      })
      source.on('end', () => { settle(chunk.received < length ? new ShortReadError(`storage sent ${chunk.received} of the ${length} bytes asked for at ${chunk.start}`) : undefined) })
      // An error after the last byte (before 'end') loses nothing: the chunk is complete.
      source.on('error', (err) => { settle(chunk.received === length ? undefined : err) })
      // A head read without reserved memory waits on the client; the others read on into theirs.
      chunk.held = chunks[head] === chunk && !wanted && chunk.copy === undefined
      if (chunk.held) source.pause()
      else source.resume()
    })
  }

  async function fetch (chunk: Chunk): Promise<void> {
    let failures = 0
    let brokeAt: number | undefined
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
        chunk.source = undefined
        chunk.done = true
        inFlight--
        if (testing && probe === undefined && chunk === chunks[0]) {
          // The first chunk, read alone: one read's speed. Now every connection, unless the
          // loop was too busy for them to pay.
          const now = performance.now()
          const busy = halfway !== undefined ? performance.eventLoopUtilization(performance.eventLoopUtilization(), halfway.loop).utilization : 0
          if (busy * minSpeedup >= 1) {
            readRestAsOne()
          } else {
            probe = { at: undefined, from: pushed, single: (pushed - (halfway?.bytes ?? 0)) / Math.max(1, now - (halfway?.at ?? now)), most: 0 }
            allowed = connections
          }
        }
        drain()
        launch()
        return
      } catch (err) {
        chunk.source?.destroy()
        chunk.source = undefined
        if (finished) return
        if (chunk.received > before) {
          failures = 0
          brokeAt = undefined
        }
        failures++
        brokeAt ??= performance.now()
        // A read that ended early is resumed from its next byte; one that sent too much never is.
        const again = err instanceof ShortReadError || (!(err instanceof OverlongReadError) && (opts.retryable?.(err) ?? false))
        const delay = backoffDelay({ initialMs: 100, maxMs: 2000, jitter: 0.5 }, failures - 1)
        // Storage that stays silent must not hold the client for every try's timeout in turn.
        const late = opts.resumeWithinMs !== undefined && performance.now() + delay - brokeAt > opts.resumeWithinMs
        if (!again || failures >= attempts || late) { fail(err); return }
        try {
          await wait(delay, controller.signal)
        } catch {
          return
        }
      }
    }
  }

  /**
   * The head's next bytes for the client, or undefined if none may go yet. With a check, the
   * range's last byte waits until the range is complete and verified.
   */
  function take (chunk: Chunk, last: boolean): Buffer | undefined {
    const holdLast = last && !chunk.done && opts.check !== undefined
    if (chunk.copy !== undefined) {
      const upTo = Math.min(chunk.received - (holdLast ? 1 : 0), chunk.delivered + (outlet !== undefined ? LENT_PIECE_BYTES : PIECE_BYTES))
      if (upTo <= chunk.delivered) return undefined
      // Lent, a view (the buffer waits for the outlet); otherwise a copy, as the pooled buffer
      // goes back to the budget while a socket may still hold this.
      const view = chunk.copy.subarray(chunk.delivered, upTo)
      chunk.delivered = upTo
      return outlet !== undefined ? view : Buffer.from(view)
    }
    if (holdLast && chunk.pieces.length === 1) return undefined
    return chunk.pieces.shift()
  }

  /** Whether everything the chunk received went to the client. */
  const handedOver = (chunk: Chunk): boolean => chunk.copy !== undefined ? chunk.delivered === chunk.received : chunk.pieces.length === 0

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
      while (wanted) {
        const data = take(chunk, last)
        if (data === undefined) break
        opts.check?.update(data)
        if (last && chunk.done && handedOver(chunk)) {
          // The very last bytes: only once the whole range proved to be what was expected.
          const err = opts.check?.verify()
          if (err !== undefined) { fail(err); return }
        }
        pushed += data.length
        batch?.()
        if (!out.push(data)) wanted = false
      }
      if (!wanted) {
        // A read into reserved memory reads on, and so does one whose bytes are all in (to its
        // end); only a head read handed on as it comes waits.
        if (chunk.copy === undefined && chunk.received <= chunk.end - chunk.start && !chunk.held) {
          chunk.held = true
          chunk.source?.pause()
        }
        return
      }
      if (!chunk.done) {
        if (chunk.held) {
          chunk.held = false
          chunk.source?.resume()
        }
        launch()
        return
      }
      giveBack(chunk)
      head++
      launch()
    }
  }

  launch()
  return out
}
