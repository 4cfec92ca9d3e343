import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { IntegrityError, Sha256Check, Sha256Verifier } from '../../src/storage/sha256.ts'

const hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

test('Sha256Check: matches across chunks, case-insensitively; a mismatch names both digests', () => {
  const data = randomBytes(100_000)
  const good = new Sha256Check(hex(data).toUpperCase())
  for (let i = 0; i < data.length; i += 7777) good.update(data.subarray(i, i + 7777))
  assert.equal(good.verify(), undefined)

  const wrong = hex(Buffer.from('other'))
  const bad = new Sha256Check(wrong)
  bad.update(data)
  const err = bad.verify()
  assert.ok(err instanceof IntegrityError)
  assert.equal(err.message, `sha256 mismatch: the manifest says ${wrong}, storage sent ${hex(data)}`)
})

/** Pipes chunks through a verifier; returns what came out before it ended or failed. */
async function through (chunks: Buffer[], expected: string): Promise<{ out: Buffer, error: unknown }> {
  const out: Buffer[] = []
  const sink = new Writable({ write (chunk: Buffer, _encoding, callback) { out.push(chunk); callback() } })
  let error: unknown
  try {
    await pipeline(Readable.from(chunks), new Sha256Verifier(expected), sink)
  } catch (err) {
    error = err
  }
  return { out: Buffer.concat(out), error }
}

test('Sha256Verifier: passes every byte when the digest matches', async () => {
  const chunks = [randomBytes(1000), randomBytes(1), randomBytes(70_000)]
  const whole = Buffer.concat(chunks)
  const { out, error } = await through(chunks, hex(whole))
  assert.equal(error, undefined)
  assert.deepEqual(out, whole)
})

test('Sha256Verifier: on a mismatch the last chunk is held back and the stream fails', async () => {
  const chunks = [randomBytes(1000), randomBytes(2000), randomBytes(3000)]
  const { out, error } = await through(chunks, hex(Buffer.from('another package')))
  assert.ok(error instanceof IntegrityError)
  assert.ok(out.length <= 3000, `${out.length} bytes passed: the last chunk must not`)
  assert.deepEqual(out, Buffer.concat(chunks).subarray(0, out.length))
})

test('Sha256Verifier: an empty body matches the empty digest, and fails any other', async () => {
  const empty = await through([], hex(Buffer.alloc(0)))
  assert.equal(empty.error, undefined)
  assert.equal(empty.out.length, 0)
  const bad = await through([], hex(Buffer.from('x')))
  assert.ok(bad.error instanceof IntegrityError)
})
