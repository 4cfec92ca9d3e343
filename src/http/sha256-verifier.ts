// A pass-through that checks a whole download against the manifest's sha256. It holds back the
// last chunk until the digest is known, so a mismatch breaks the transfer before the client has
// every byte: a corrupt package can never arrive looking complete.

import { createHash } from 'node:crypto'
import type { Hash } from 'node:crypto'
import { Transform } from 'node:stream'
import type { TransformCallback } from 'node:stream'

export class IntegrityError extends Error {
  override name = 'IntegrityError'
}

export class Sha256Verifier extends Transform {
  readonly #expected: string
  readonly #hash: Hash = createHash('sha256')
  #held: Buffer | undefined

  constructor (expectedHex: string) {
    super({ highWaterMark: 256 * 1024 })
    this.#expected = expectedHex.toLowerCase()
  }

  override _transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#hash.update(chunk)
    const previous = this.#held
    this.#held = chunk
    callback(null, previous)
  }

  override _flush (callback: TransformCallback): void {
    const actual = this.#hash.digest('hex')
    if (actual !== this.#expected) {
      callback(new IntegrityError(`sha256 mismatch: the manifest says ${this.#expected}, storage sent ${actual}`))
      return
    }
    callback(null, this.#held)
  }
}
