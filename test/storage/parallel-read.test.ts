// Parallel ranged reads delivered in order: over a range reader on real bytes whose reads finish
// in random order, break, lie about their length, or never end; with a shared budget and a
// consumer that leaves.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { EventEmitter, once } from 'node:events'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { ReadAheadBudget, parallelRead } from '../../src/storage/parallel-read.ts'
import { pipedInto } from '../../src/storage/outlet.ts'
import type { RangeReader } from '../../src/storage/parallel-read.ts'
import { until } from '../helpers/until.ts'

const KiB = 1024
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** A reader over `blob` that sends each range in small pieces after a random delay. */
function reader (blob: Buffer, opts: {
  fault?: (start: number, end: number, call: number) => 'short' | 'long' | 'error' | 'hang' | 'late' | undefined
  /** Milliseconds per piece: on each read's own clock (a limit per connection), or on one clock all reads share (a limit on the whole). */
  pace?: { readonly perRead: number } | { readonly shared: number }
} = {}) {
  const stats = { calls: 0, open: 0, maxOpen: 0, ranges: [] as Array<[number, number]> }
  let sharedClock = 0
  const delay = (): number => {
    const pace = opts.pace
    if (pace === undefined) return Math.random() * 2
    if ('perRead' in pace) return pace.perRead
    sharedClock = Math.max(sharedClock, performance.now()) + pace.shared
    return sharedClock - performance.now()
  }
  const read: RangeReader = async (start, end, signal) => {
    const call = stats.calls++
    stats.ranges.push([start, end])
    await sleep(Math.random() * 5)
    const fault = opts.fault?.(start, end, call)
    if (fault === 'error') throw new Error('connection refused')
    const stop = fault === 'short' ? start + Math.floor((end - start) / 2) : fault === 'long' ? end + 10 : end
    stats.open++
    stats.maxOpen = Math.max(stats.maxOpen, stats.open)
    let at = start
    const stream = new Readable({
      read () {
        setTimeout(() => { step(this) }, delay())
      },
      destroy (err, cb) { stats.open--; cb(err) }
    })
    function step (stream: Readable): void {
      if (signal.aborted) { stream.destroy(); return }
      if (fault === 'hang' && at > start) return
      if (at > stop) {
        if (fault === 'short' || fault === 'late') stream.destroy(new Error('ECONNRESET'))
        else stream.push(null)
        return
      }
      const next = Math.min(stop, at + 7 * KiB)
      stream.push(fault === 'long' && next > end ? Buffer.alloc(next - at + 1, 1) : blob.subarray(at, next + 1))
      at = next + 1
    }
    return stream
  }
  return { read, stats }
}

async function collect (stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const part of stream) parts.push(part as Buffer)
  return Buffer.concat(parts)
}

test('bytes arrive in order, every range once, with at most `connections` reads at a time', async () => {
  const blob = randomBytes(1024 * KiB + 123)
  for (const [start, end] of [[0, blob.length - 1], [5, blob.length - 1], [100 * KiB + 1, 700 * KiB - 1], [7, 7]] as const) {
    const { read, stats } = reader(blob)
    const budget = new ReadAheadBudget(10 * 1024 * KiB)
    const got = await collect(parallelRead({ minSpeedup: 0, start, end, chunkBytes: 64 * KiB, connections: 4, budget, readRange: read }))
    assert.equal(sha(got), sha(blob.subarray(start, end + 1)), `${start}-${end}`)
    assert.ok(stats.maxOpen <= 4, `${stats.maxOpen} reads at once`)
    const covered = stats.ranges.map(([s, e]) => e - s + 1).reduce((a, b) => a + b, 0)
    assert.equal(covered, end - start + 1, 'every byte asked for once')
    assert.equal(budget.inUse, 0, 'the budget is all returned')
  }
})

test('a read that breaks is resumed from its next byte; one that errors is retried when retryable', async () => {
  const blob = randomBytes(512 * KiB)
  const broken = new Set<number>()
  const { read, stats } = reader(blob, {
    fault: (start) => {
      // Every third chunk fails once: alternately a break halfway through and a refused read.
      const index = start / (32 * KiB)
      if (!Number.isInteger(index) || index % 3 !== 1 || broken.has(start)) return undefined
      broken.add(start)
      return index % 2 === 0 ? 'short' : 'error'
    }
  })
  const budget = new ReadAheadBudget(1024 * KiB)
  const got = await collect(parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes: 32 * KiB, connections: 3, budget, readRange: read, retryable: (err) => ['connection refused', 'ECONNRESET'].includes((err as Error).message) }))
  assert.equal(sha(got), sha(blob))
  assert.equal(broken.size, 5)
  assert.ok(stats.calls > 512 / 32, 'some ranges were read again')
  assert.equal(budget.inUse, 0)
})

test('an error that is not retryable, a persistent break, or too many bytes fail the stream', async () => {
  const blob = randomBytes(256 * KiB)
  for (const fault of ['error', 'short', 'long'] as const) {
    const budget = new ReadAheadBudget(1024 * KiB)
    const { read, stats } = reader(blob, { fault: (start) => start === 64 * KiB ? fault : undefined })
    const stream = parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes: 32 * KiB, connections: 3, budget, readRange: read, attempts: 3 })
    await assert.rejects(collect(stream), fault === 'error' ? /connection refused/ : fault === 'long' ? /more than the/ : /of the 32768 bytes|ECONNRESET|closed the read/)
    await until('reads closed', () => stats.open === 0 ? true : undefined)
    assert.equal(budget.inUse, 0, `${fault}: budget returned`)
  }
})

test('a consumer that leaves cancels every read in flight and returns the budget', async () => {
  const blob = randomBytes(2048 * KiB)
  const { read, stats } = reader(blob, { fault: (start) => start >= 256 * KiB ? 'hang' : undefined })
  const budget = new ReadAheadBudget(4096 * KiB)
  const stream = parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes: 128 * KiB, connections: 6, budget, readRange: read })
  let seen = 0
  await assert.rejects(pipeline(stream, new Writable({
    write (chunk: Buffer, _enc, cb) {
      seen += chunk.length
      cb(seen > 200 * KiB ? new Error('client left') : null)
    }
  })), /client left/)
  await until('every read closed', () => stats.open === 0 ? true : undefined)
  assert.equal(budget.inUse, 0)
})

test('many downloads share the budget: none fails, and read-ahead never exceeds it', async () => {
  const blob = randomBytes(1024 * KiB)
  const budget = new ReadAheadBudget(256 * KiB)
  let peak = 0
  const { read } = reader(blob)
  const watched: RangeReader = async (start, end, signal) => {
    peak = Math.max(peak, budget.inUse)
    return read(start, end, signal)
  }
  const results = await Promise.all(Array.from({ length: 12 }, () => collect(parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes: 64 * KiB, connections: 8, budget, readRange: watched }))))
  for (const got of results) assert.equal(sha(got), sha(blob))
  assert.ok(peak <= 256 * KiB, `peak read-ahead ${peak}`)
  assert.equal(budget.inUse, 0)
})

/**
 * An outlet that behaves as a socket does: what is written waits (counted in writableLength,
 * with backpressure past its high-water mark) until it is flushed, a little at a time, at which
 * moment its bytes are copied out, as the kernel copies what a socket sends. A lent buffer reused
 * too early shows here as bytes of another download in what was flushed.
 */
class QueueOutlet extends Writable {
  readonly sent: Buffer[] = []
  #pending: { data: Buffer, done: (err?: Error | null) => void } | undefined
  constructor () { super({ highWaterMark: 64 * KiB }) }
  override _write (data: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.#pending = { data, done }
  }

  /** Sends up to `bytes` from the front of the queue. */
  flush (bytes: number): void {
    for (let first = this.#pending; first !== undefined && bytes > 0; first = this.#pending) {
      const n = Math.min(bytes, first.data.length)
      this.sent.push(Buffer.from(first.data.subarray(0, n)))
      bytes -= n
      if (n < first.data.length) {
        first.data = first.data.subarray(n)
        return
      }
      this.#pending = undefined
      first.done()
    }
  }
}

/** The connection under an outlet: closed, it will send nothing more. */
class FakeConnection extends EventEmitter {
  destroyed = false
  close (): void {
    this.destroyed = true
    this.emit('close')
  }
}

test('a body lent to its outlet hands on views of its read-ahead; a buffer goes back only once its bytes have left', async () => {
  const blob = randomBytes(2048 * KiB + 5)
  const chunkBytes = 128 * KiB
  // Three buffers for four downloads of sixteen chunks each: every buffer is reused many times.
  const budget = new ReadAheadBudget(3 * chunkBytes)
  // One connection for all, as keep-alive has it: each body's listener on it goes when it is done.
  const connection = new FakeConnection()
  const sent = await Promise.all(Array.from({ length: 4 }, async (_, i) => {
    const { read } = reader(blob)
    const outlet = new QueueOutlet()
    const body = parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes, connections: 4, budget, readRange: read })
    pipedInto(body, outlet, connection)
    let views = 0
    body.on('data', (data: Buffer) => { if (data.buffer.byteLength === chunkBytes) views++ })
    body.pipe(outlet)
    // The socket sends at its own pace, some of its queue at a time: slowest for the first.
    const pace = setInterval(() => { outlet.flush((i + 1) * 24 * KiB) }, 1)
    await once(outlet, 'finish')
    clearInterval(pace)
    assert.ok(views > 0, 'read-ahead was handed on as views of pooled buffers')
    return Buffer.concat(outlet.sent)
  }))
  for (const [i, got] of sent.entries()) assert.equal(sha(got), sha(blob), `download ${i}`)
  assert.equal(budget.inUse, 0, 'every lent buffer went back once its bytes had left')
  assert.equal(connection.listenerCount('close'), 0, 'no listener left on the connection')
})

test('a lent buffer waits while its bytes are queued, even after its body failed, until they leave or the connection closes', async () => {
  const blob = randomBytes(4096 * KiB)
  const other = randomBytes(1024 * KiB)
  const chunkBytes = 128 * KiB
  // Two buffers: the next download cannot help taking the one whose bytes are queued, if it is free.
  const budget = new ReadAheadBudget(2 * chunkBytes)
  const { read } = reader(blob)
  const outlet = new QueueOutlet()
  const connection = new FakeConnection()
  const body = parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes, connections: 4, budget, readRange: read })
  pipedInto(body, outlet, connection)
  body.pipe(outlet)
  // The socket sends the head and a little of the next chunk (read ahead, lent), then stalls;
  // the body fails (as when storage does).
  const sentBytes = (): number => outlet.sent.reduce((n, b) => n + b.length, 0)
  await until('a lent view queued', () => {
    outlet.flush(16 * KiB)
    return sentBytes() > chunkBytes + 16 * KiB ? true : undefined
  }, 10_000, 1)
  const failed = new Promise((resolve) => body.once('error', resolve))
  body.destroy(new Error('storage failed'))
  assert.match(String(await failed), /storage failed/)
  assert.ok(budget.inUse > 0, 'buffers whose bytes wait in the outlet are held')
  // Another download takes what the pool has meanwhile, with other bytes.
  const got = await collect(parallelRead({ minSpeedup: 0, start: 0, end: other.length - 1, chunkBytes, connections: 4, budget, readRange: reader(other).read }))
  assert.equal(sha(got), sha(other))
  // The first download's queue goes out untouched by the second.
  outlet.flush(blob.length)
  const first = Buffer.concat(outlet.sent)
  assert.ok(first.length > chunkBytes + 16 * KiB, `${first.length} bytes were queued`)
  assert.ok(first.equals(blob.subarray(0, first.length)), 'the queued bytes are the blob\'s, as they were')
  connection.close()
  assert.equal(budget.inUse, 0, 'a closed connection gives every buffer back')
})

test('a slow consumer holds back only its own window', async () => {
  const blob = randomBytes(4096 * KiB)
  const { read, stats } = reader(blob)
  const budget = new ReadAheadBudget(100 * 1024 * KiB)
  const stream = parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes: 64 * KiB, connections: 4, budget, readRange: read })
  // Nobody reads: after the window (the head and `connections` chunks after it) is full,
  // nothing more is asked of storage.
  await until('the window filled', () => stats.calls >= 5 ? true : undefined)
  await sleep(100)
  assert.equal(stats.calls, 5, `${stats.calls} reads for an idle consumer`)
  assert.equal(budget.inUse, 4 * 64 * KiB)
  const got = await collect(stream)
  assert.equal(sha(got), sha(blob))
})

test('a chunk completed while its client held back still runs to its end: no read left paused', async () => {
  // Sources like the store's raw bodies: nothing at all (not even 'end') while paused.
  const blob = randomBytes(1024 * KiB)
  const open = new Set<EventEmitter>()
  const read: RangeReader = async (start, end) => {
    const source = Object.assign(new EventEmitter(), {
      paused: false,
      at: start,
      pause () { source.paused = true },
      resume () {
        source.paused = false
        setImmediate(step)
      },
      destroy () { open.delete(source) }
    })
    open.add(source)
    function step (): void {
      if (source.paused || !open.has(source)) return
      if (source.at > end) {
        open.delete(source)
        source.emit('end')
        return
      }
      const next = Math.min(end, source.at + 16 * KiB - 1)
      const piece = blob.subarray(source.at, next + 1)
      source.at = next + 1
      source.emit('data', piece)
      setImmediate(step)
    }
    return source
  }
  const budget = new ReadAheadBudget(1024 * KiB)
  const stream = parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes: 64 * KiB, connections: 3, budget, readRange: read })
  const parts: Buffer[] = []
  // A consumer slower than storage: the head's read is paused again and again.
  await pipeline(stream, new Writable({
    highWaterMark: 1,
    write (chunk: Buffer, _enc, cb) { parts.push(chunk); setTimeout(cb, 1) }
  }))
  assert.equal(sha(Buffer.concat(parts)), sha(blob))
  await until('every read ended', () => open.size === 0 ? true : undefined, 2000)
})

test('parallel reads go on only where they pay: a limit per connection keeps them, a limit on the whole ends them', async () => {
  // A first read of 73 pieces: one read's speed is taken over 36 of them, well above timer jitter.
  const blob = randomBytes(4096 * KiB)
  const chunkBytes = 128 * KiB
  // Storage that limits each connection: four reads carry four times one.
  const perConnection = reader(blob, { pace: { perRead: 2 } })
  const budget = new ReadAheadBudget(4096 * KiB)
  const fast = await collect(parallelRead({ start: 0, end: blob.length - 1, chunkBytes, connections: 4, budget, readRange: perConnection.read }))
  assert.equal(sha(fast), sha(blob))
  // The first read, alone, is four chunks long (the speed test's), then a read per chunk.
  assert.deepEqual(perConnection.stats.ranges[0], [0, 4 * chunkBytes - 1])
  assert.equal(perConnection.stats.ranges.length, blob.length / chunkBytes - 3, JSON.stringify(perConnection.stats.ranges))
  assert.equal(perConnection.stats.maxOpen, 4)

  // Storage (or a busy process) whose limit is the whole: after the speed test, one read.
  const shared = reader(blob, { pace: { shared: 2 } })
  const own = new ReadAheadBudget(4096 * KiB)
  const slow = await collect(parallelRead({ start: 0, end: blob.length - 1, chunkBytes, connections: 4, budget: own, readRange: shared.read }))
  assert.equal(sha(slow), sha(blob))
  const ranges = shared.stats.ranges
  const lastRange = ranges[ranges.length - 1]
  assert.ok(lastRange !== undefined && lastRange[1] === blob.length - 1 && lastRange[1] - lastRange[0] + 1 > chunkBytes, JSON.stringify(ranges))
  // The first chunk alone, the test's reads (two per connection, and those started while it
  // measured), then one.
  assert.ok(ranges.length <= 1 + 3 * 4 + 1, `${ranges.length} reads`)
  assert.equal(ranges.map(([s, e]) => e - s + 1).reduce((a, b) => a + b, 0), blob.length, 'every byte asked for once')
  assert.equal(own.inUse, 0)
  assert.ok(own.allocated <= 5 * chunkBytes, `the rest, read as one, took no read-ahead: ${own.allocated} allocated`)

  // Without budget for every connection the test measures something else: no verdict, reads go on by chunk.
  const starved = reader(blob, { pace: { shared: 2 } })
  const small = new ReadAheadBudget(chunkBytes)
  const got = await collect(parallelRead({ start: 0, end: blob.length - 1, chunkBytes, connections: 4, budget: small, readRange: starved.read }))
  assert.equal(sha(got), sha(blob))
  assert.equal(starved.stats.ranges.length, blob.length / chunkBytes - 3, JSON.stringify(starved.stats.ranges))
})

/**
 * Reads `blob` over four connections from storage that limits each one (a 7 KiB piece per 2 ms
 * per read) into a client that takes each piece as `take` says; checks what arrived.
 */
async function throughClient (blob: Buffer, chunkBytes: number, take: (chunk: Buffer, done: () => void) => void): Promise<{ ranges: Array<[number, number]>, budget: ReadAheadBudget }> {
  const perConnection = reader(blob, { pace: { perRead: 2 } })
  const budget = new ReadAheadBudget(4096 * KiB)
  const parts: Buffer[] = []
  await pipeline(parallelRead({ start: 0, end: blob.length - 1, chunkBytes, connections: 4, budget, readRange: perConnection.read }), new Writable({
    highWaterMark: 1,
    write (chunk: Buffer, _enc, cb) { parts.push(chunk); take(chunk, cb) }
  }))
  assert.equal(sha(Buffer.concat(parts)), sha(blob))
  return { ranges: perConnection.stats.ranges, budget }
}

test('a client slower than one read ends parallel reads after the test, though storage would carry more', async () => {
  // Storage that limits each connection (3.5 KiB/ms per read), and a client that takes 2 KiB/ms.
  // Read-ahead fills its budget at four reads' speed, but nothing reaches the client faster.
  const blobLength = 4096 * KiB
  const chunkBytes = 128 * KiB
  const { ranges, budget } = await throughClient(randomBytes(blobLength), chunkBytes, (chunk, done) => { setTimeout(done, chunk.length / (2 * KiB)) })
  const lastRange = ranges[ranges.length - 1]
  assert.ok(lastRange !== undefined && lastRange[1] === blobLength - 1 && lastRange[1] - lastRange[0] + 1 > chunkBytes, JSON.stringify(ranges))
  assert.ok(ranges.length <= 1 + 3 * 4 + 1, `${ranges.length} reads`)
  assert.equal(budget.inUse, 0)
})

test('an event loop too busy for parallel reads to pay skips the test: after the first chunk, one read', async () => {
  // Storage that would carry four times as much over four connections, but a process whose loop
  // is busy whatever it reads (8 ms of work per 7 KiB piece).
  const blobLength = 1024 * KiB
  const chunkBytes = 32 * KiB
  const { ranges, budget } = await throughClient(randomBytes(blobLength), chunkBytes, (chunk, done) => {
    const until = performance.now() + 8 * chunk.length / (7 * KiB)
    while (performance.now() < until);
    done()
  })
  assert.deepEqual(ranges, [[0, 4 * chunkBytes - 1], [4 * chunkBytes, blobLength - 1]])
  assert.equal(budget.allocated, 0)
})

test('a read that fails after its last byte loses nothing: the chunk is complete', async () => {
  const blob = randomBytes(256 * KiB)
  const { read } = reader(blob, { fault: (start) => start === 64 * KiB ? 'late' : undefined })
  const got = await collect(parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes: 32 * KiB, connections: 3, budget: new ReadAheadBudget(1024 * KiB), readRange: read }))
  assert.equal(sha(got), sha(blob))
})

test('the read-ahead budget is a pool: buffers are reused, never more than its total is allocated', () => {
  const budget = new ReadAheadBudget(10 * KiB)
  const a = budget.tryAcquire(4 * KiB)
  const b = budget.tryAcquire(4 * KiB)
  assert.ok(a !== undefined && b !== undefined)
  assert.equal(budget.tryAcquire(4 * KiB), undefined, 'over the total')
  assert.deepEqual([budget.inUse, budget.allocated], [8 * KiB, 8 * KiB])
  budget.release(a)
  const again = budget.tryAcquire(3 * KiB)
  assert.ok(again !== undefined)
  assert.equal(again.length, 3 * KiB, 'exactly the size asked for')
  assert.equal(again.buffer, a.buffer, 'the same memory, reused')
  assert.equal(budget.allocated, 8 * KiB)
  budget.release(again)
  budget.release(b)
  assert.equal(budget.inUse, 0)
  // More than the total is refused without dropping the pool.
  assert.equal(budget.tryAcquire(11 * KiB), undefined)
  assert.equal(budget.allocated, 8 * KiB)
  // Free buffers too small make room for a larger one: still within the total.
  const large = budget.tryAcquire(9 * KiB)
  assert.ok(large !== undefined)
  assert.ok(budget.allocated <= 10 * KiB, `${budget.allocated} allocated`)
  budget.release(large)
  // The smallest free buffer that fits is the one lent.
  const pool = new ReadAheadBudget(10 * KiB)
  const [six, two] = [pool.tryAcquire(6 * KiB), pool.tryAcquire(2 * KiB)]
  assert.ok(six !== undefined && two !== undefined)
  pool.release(six)
  pool.release(two)
  assert.equal(pool.tryAcquire(2 * KiB)?.buffer, two.buffer)
})

test('an idle pool lets its buffers go, their memory at once where the runtime can', async () => {
  const budget = new ReadAheadBudget(10 * KiB, 20)
  const a = budget.tryAcquire(4 * KiB)
  const b = budget.tryAcquire(2 * KiB)
  assert.ok(a !== undefined && b !== undefined)
  budget.release(a)
  await sleep(60)
  assert.equal(budget.allocated, 6 * KiB, 'kept while a buffer is lent out')
  budget.release(b)
  assert.equal(budget.allocated, 6 * KiB, 'kept while it may be needed again')
  await until('the pool trimmed', () => budget.allocated === 0 ? true : undefined, 2000)
  // Detached (ArrayBuffer.prototype.transfer, Node 21 and later): freed now, not at a full
  // collection. Node 20 has no way to, and leaves them to the collector.
  const detaches = typeof (new ArrayBuffer(0) as { transfer?: unknown }).transfer === 'function'
  assert.deepEqual([a.buffer.byteLength, b.buffer.byteLength], detaches ? [0, 0] : [4 * KiB, 2 * KiB])
  // And it works on as before.
  assert.ok(budget.tryAcquire(8 * KiB) !== undefined)
  assert.equal(budget.allocated, 8 * KiB)

  // Free buffers too small for an ask make room for it: dropped, and detached the same way.
  const roomy = new ReadAheadBudget(10 * KiB)
  const [c, d] = [roomy.tryAcquire(4 * KiB), roomy.tryAcquire(4 * KiB)]
  assert.ok(c !== undefined && d !== undefined)
  roomy.release(c)
  roomy.release(d)
  assert.equal(roomy.tryAcquire(16 * KiB), undefined, 'more than the whole budget')
  assert.equal(roomy.tryAcquire(8 * KiB)?.length, 8 * KiB)
  assert.equal(roomy.allocated, 8 * KiB)
  assert.deepEqual([c.buffer.byteLength, d.buffer.byteLength], detaches ? [0, 0] : [4 * KiB, 4 * KiB])
})

test('a chunk that cannot be read again within resumeWithinMs fails the stream, however many tries are left', async () => {
  const blob = randomBytes(256 * KiB)
  const { read } = reader(blob, { fault: (start) => start === 64 * KiB ? 'error' : undefined })
  const started = performance.now()
  const stream = parallelRead({ minSpeedup: 0, start: 0, end: blob.length - 1, chunkBytes: 32 * KiB, connections: 3, budget: new ReadAheadBudget(1024 * KiB), readRange: read, retryable: () => true, attempts: 100, resumeWithinMs: 300 })
  await assert.rejects(collect(stream), /connection refused/)
  assert.ok(performance.now() - started < 2000, `failed after ${performance.now() - started} ms`)
})
