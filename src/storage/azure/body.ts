// A download's body from storage, exactly the bytes start..end of one blob version. It counts what
// arrives: a body that ends short or runs long fails instead of ending, and a sha256 check sees
// every byte and fails the stream before its last bytes are released. When the storage connection
// breaks mid-body, the rest is read again from the next byte (`reopen`: a ranged read pinned to
// the same ETag, checked like the first), a few times with backoff, before the stream fails: one
// dropped storage connection must not break a node script's wget. It never buffers more than
// one chunk beyond what its reader asked for.

import { Readable } from 'node:stream'
import type { BodySource } from './http.ts'
import { batchWrites, whenPiped } from '../outlet.ts'
import type { Sha256Check } from '../sha256.ts'
import { StorageError } from '../types.ts'
import { backoffDelay, wait } from '../../lib/backoff.ts'
import type { Backoff } from '../../lib/backoff.ts'
import { errnoCode } from '../../lib/errors.ts'

export interface ResumableBodyOptions {
  /** The blob, for messages. */
  readonly what: string
  readonly start: number
  /** Inclusive; start - 1 for an empty body. */
  readonly end: number
  readonly check?: Sha256Check | undefined
  readonly backoff: Backoff
  /** Reopenings in a row without a byte between them before the body fails. */
  readonly maxResumes: number
  /** How long after a break the body may take to be reading again. */
  readonly resumeWithinMs: number
  /** Called with the length of every piece received (the store's count of bytes read). */
  readonly onBytes?: (bytes: number) => void
  /** The body again from byte `from` (inclusive) to `end`, checked and pinned, answered by `deadline`. */
  readonly reopen: (from: number, deadline: number) => Promise<BodySource>
}

export class ResumableBody extends Readable {
  readonly #options: ResumableBodyOptions
  readonly #length: number
  #source: BodySource | undefined
  #received = 0
  /** Reopenings since the last byte arrived. */
  #failedResumes = 0
  #resumes = 0
  #wanted = false
  /** Set once piped straight into a response: pushes are batched per turn of the event loop. */
  #batch: (() => void) | undefined

  constructor (source: BodySource, options: ResumableBodyOptions) {
    super({ highWaterMark: 64 * 1024 })
    this.#options = options
    this.#length = options.end - options.start + 1
    this.#attach(source)
    whenPiped(this, (outlet) => { this.#batch = batchWrites(outlet) })
  }

  /** How often the body was read again after a break (for tests and logs). */
  get resumes (): number { return this.#resumes }

  #attach (source: BodySource): void {
    this.#source = source
    source.on('data', (chunk: Buffer) => { this.#take(source, chunk) })
    source.on('end', () => {
      if (this.#source !== source || this.destroyed) return
      if (this.#received < this.#length) this.#broken(source, new Error('the body ended early'))
    })
    source.on('error', (err) => { this.#broken(source, err) })
    if (!this.#wanted) source.pause()
  }

  override _read (): void {
    this.#wanted = true
    if (this.#length === 0 && this.#received === 0) {
      this.#finish()
      return
    }
    this.#source?.resume()
  }

  #take (source: BodySource, chunk: Buffer): void {
    if (this.#source !== source || this.destroyed) return
    const left = this.#length - this.#received
    if (chunk.length > left) {
      source.destroy()
      this.destroy(new StorageError('failed', `storage sent more than the ${this.#length} bytes asked for of ${this.#options.what}`))
      return
    }
    this.#received += chunk.length
    this.#options.onBytes?.(chunk.length)
    this.#failedResumes = 0
    const check = this.#options.check
    check?.update(chunk)
    if (this.#received === this.#length) {
      const err = check?.verify()
      if (err !== undefined) {
        source.destroy()
        this.destroy(err)
        return
      }
      this.#batch?.()
      this.push(chunk)
      this.#finish()
      return
    }
    this.#batch?.()
    if (!this.push(chunk)) {
      this.#wanted = false
      source.pause()
    }
  }

  #finish (): void {
    if (this.#length === 0) {
      const err = this.#options.check?.verify()
      if (err !== undefined) {
        this.destroy(err)
        return
      }
    }
    this.#source = undefined
    this.push(null)
  }

  #broken (source: BodySource, err: Error): void {
    if (this.#source !== source || this.destroyed) return
    this.#source = undefined
    source.destroy()
    this.#resume(err).catch((e: unknown) => { this.destroy(e instanceof Error ? e : new Error(String(e))) })
  }

  async #resume (err: Error): Promise<void> {
    const { what, start, backoff, maxResumes } = this.#options
    const at = (): string => `after ${this.#received} of ${this.#length} bytes of ${what}`
    let last: Error = err
    const deadline = Date.now() + this.#options.resumeWithinMs
    while (this.#failedResumes < maxResumes) {
      const delay = backoffDelay(backoff, this.#failedResumes)
      if (Date.now() + delay >= deadline) break
      await wait(delay).catch(() => {})
      this.#failedResumes++
      if (this.destroyed) return
      try {
        const source = await this.#options.reopen(start + this.#received, deadline)
        if (this.destroyed) {
          source.destroy()
          return
        }
        this.#resumes++
        this.#attach(source)
        if (this.#wanted) source.resume()
        return
      } catch (reopenErr) {
        last = reopenErr instanceof Error ? reopenErr : new Error(String(reopenErr))
        // Another version now, or gone: reading on would mix versions.
        if (reopenErr instanceof StorageError && (reopenErr.kind === 'changed' || reopenErr.kind === 'not-found')) break
      }
    }
    if (this.destroyed) return
    const code = errnoCode(err)
    this.destroy(new StorageError('unreachable', `storage connection broke ${at()} (${err.message}), and reading on from byte ${start + this.#received} failed: ${last.message}`, {
      ...(code !== undefined && { code }),
      cause: err
    }))
  }

  override _destroy (err: Error | null, callback: (error?: Error | null) => void): void {
    const source = this.#source
    this.#source = undefined
    source?.destroy()
    callback(err)
  }
}
