// Checks a whole download against the manifest's sha256. The last bytes are held back until the
// digest is known, so a mismatch breaks the transfer before the client has every byte: a corrupt
// package can never arrive looking complete. Backends apply it to the bodies they return
// (ReadOptions.sha256): the Azure one inside its read loop, others through Sha256Verifier.

import { createHash } from 'node:crypto'
import type { Hash } from 'node:crypto'
import { Transform } from 'node:stream'
import type { TransformCallback } from 'node:stream'

export class IntegrityError extends Error {
  override name = 'IntegrityError'
}

/** Sees every byte; `verify` says whether they hash to the expected digest. */
export class Sha256Check {
  readonly #expected: string
  readonly #hash: Hash = createHash('sha256')

  constructor (expectedHex: string) {
    this.#expected = expectedHex.toLowerCase()
  }

  update (chunk: Buffer): void { this.#hash.update(chunk) }

  verify (): IntegrityError | undefined {
    const actual = this.#hash.digest('hex')
    if (actual === this.#expected) return undefined
    return new IntegrityError(`sha256 mismatch: the manifest says ${this.#expected}, storage sent ${actual}`)
  }
}

/** A pass-through holding back its last chunk until the digest matches. */
export class Sha256Verifier extends Transform {
  readonly #check: Sha256Check
  #held: Buffer | undefined

  constructor (expectedHex: string) {
    super({ highWaterMark: 256 * 1024 })
    this.#check = new Sha256Check(expectedHex)
  }

  override _transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#check.update(chunk)
    const previous = this.#held
    this.#held = chunk
    callback(null, previous)
  }

  override _flush (callback: TransformCallback): void {
    const err = this.#check.verify()
    if (err !== undefined) {
      callback(err)
      return
    }
    callback(null, this.#held)
  }
}
