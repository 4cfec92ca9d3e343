// A body piped straight into its response batches its writes: what storage delivers in one turn
// of the event loop leaves in one writev. Over an outlet that, like a socket with room in its
// kernel buffer, sends each write at once.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { EventEmitter, once } from 'node:events'
import { Writable } from 'node:stream'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { batchWrites, pipedInto } from '../../src/storage/outlet.ts'
import { ResumableBody } from '../../src/storage/azure/body.ts'
import { ReadAheadBudget, parallelRead } from '../../src/storage/parallel-read.ts'

const KiB = 1024

/** Records how many pieces each send carried; sends at once (its callback is synchronous). */
class CountingOutlet extends Writable {
  readonly sends: number[] = []
  readonly received: Buffer[] = []
  constructor () { super({ highWaterMark: 256 * KiB }) }
  override _write (data: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.sends.push(1)
    this.received.push(data)
    done()
  }

  override _writev (chunks: Array<{ chunk: Buffer }>, done: () => void): void {
    this.sends.push(chunks.length)
    for (const { chunk } of chunks) this.received.push(chunk)
    done()
  }
}

/** A storage body that delivers `pieces` 16 KiB pieces per turn of the event loop while resumed. */
class BurstSource extends EventEmitter {
  #flowing = false
  #at = 0
  #scheduled = false
  readonly #bytes: Buffer
  readonly #pieces: number
  constructor (bytes: Buffer, pieces: number) {
    super()
    this.#bytes = bytes
    this.#pieces = pieces
  }

  pause (): void { this.#flowing = false }
  resume (): void {
    this.#flowing = true
    if (this.#scheduled) return
    this.#scheduled = true
    setImmediate(() => { this.#scheduled = false; this.#turn() })
  }

  destroy (): void { this.#flowing = false }
  #turn (): void {
    for (let i = 0; i < this.#pieces && this.#flowing && this.#at < this.#bytes.length; i++) {
      const next = Math.min(this.#bytes.length, this.#at + 16 * KiB)
      this.emit('data', this.#bytes.subarray(this.#at, next))
      this.#at = next
    }
    if (this.#at >= this.#bytes.length) this.emit('end')
    else if (this.#flowing) this.resume()
  }
}

const connection = Object.assign(new EventEmitter(), { destroyed: false })

async function send (body: Readable, piped: boolean): Promise<CountingOutlet> {
  const outlet = new CountingOutlet()
  if (piped) pipedInto(body, outlet, connection)
  await pipeline(body, outlet)
  return outlet
}

test('batchWrites: what is written in one turn of the event loop leaves in one send', async () => {
  const outlet = new CountingOutlet()
  const batch = batchWrites(outlet)
  for (let turn = 0; turn < 3; turn++) {
    for (let i = 0; i < 5; i++) {
      batch()
      outlet.write(Buffer.alloc(KiB, i))
    }
    await new Promise((resolve) => setImmediate(resolve))
  }
  assert.deepEqual(outlet.sends, [5, 5, 5])
  outlet.end()
  await once(outlet, 'finish')
})

test('a storage body piped into its response sends each turn\'s pieces together; otherwise one send each', async () => {
  const bytes = randomBytes(1024 * KiB)
  const resumable = (): ResumableBody => new ResumableBody(new BurstSource(bytes, 8), {
    what: 'blob "a"',
    start: 0,
    end: bytes.length - 1,
    backoff: { initialMs: 1, maxMs: 5 },
    maxResumes: 0,
    resumeWithinMs: 1000,
    reopen: async () => { throw new Error('no break here') }
  })
  const parallel = (): Readable => parallelRead({
    start: 0,
    end: bytes.length - 1,
    chunkBytes: 256 * KiB,
    connections: 2,
    budget: new ReadAheadBudget(0),
    minSpeedup: 0,
    readRange: async (start, end) => new BurstSource(bytes.subarray(start, end + 1), 8)
  })
  for (const [name, make] of [['one read', resumable], ['parallel read', parallel]] as const) {
    const batched = await send(make(), true)
    assert.deepEqual(Buffer.concat(batched.received), bytes, name)
    // 64 pieces, 8 a turn: a send per turn (a few more where backpressure splits one).
    assert.ok(batched.sends.length <= 12 && batched.sends.every((n) => n > 1), `${name}: ${JSON.stringify(batched.sends)}`)
    const unbatched = await send(make(), false)
    assert.deepEqual(Buffer.concat(unbatched.received), bytes, name)
    assert.equal(unbatched.sends.length, 64, name)
  }
})
