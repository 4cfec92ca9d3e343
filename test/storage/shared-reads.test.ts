import { test } from 'node:test'
import assert from 'node:assert/strict'
import { rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buffer } from 'node:stream/consumers'
import { createLocalStore } from '../../src/storage/local.ts'
import { withSharedReads } from '../../src/storage/shared-reads.ts'
import type { BlobStore } from '../../src/storage/types.ts'
import { tempDir } from '../helpers/tmp.ts'

test('stat cache: one lookup per TTL; a replaced blob fails the pinned read and is looked up again', async (t) => {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'a.bin'), 'one')
  const local = createLocalStore(dir)
  let stats = 0
  const counting: BlobStore = { ...local, stat: async (p) => { stats++; return local.stat(p) } }
  const store = withSharedReads(counting, { statTtlMs: 60_000, coalesceMaxBytes: 0 })

  const first = await store.stat('a.bin')
  assert.deepEqual(await store.stat('a.bin'), first)
  assert.equal(stats, 1)

  await writeFile(join(dir, 'a.tmp'), 'two!')
  await rename(join(dir, 'a.tmp'), join(dir, 'a.bin'))
  const cached = await store.stat('a.bin')
  assert.equal(cached.etag, first.etag, 'within the TTL the old properties are reused')
  await assert.rejects(store.read('a.bin', { etag: cached.etag }), { kind: 'changed' })
  const fresh = await store.stat('a.bin')
  assert.notEqual(fresh.etag, first.etag)
  assert.equal(stats, 2)
  assert.equal(String(await buffer(await store.read('a.bin', { etag: fresh.etag }))), 'two!')
})

test('concurrent whole reads of a small blob share one storage read; nothing outlives them', async (t) => {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'small.bin'), 'small bytes')
  await writeFile(join(dir, 'big.bin'), Buffer.alloc(5000, 1))
  const local = createLocalStore(dir)
  const reads: string[] = []
  const counting: BlobStore = { ...local, read: async (p, o) => { reads.push(p); return local.read(p, o) } }
  const store = withSharedReads(counting, { statTtlMs: 60_000, coalesceMaxBytes: 4096 })
  const small = await store.stat('small.bin')
  const big = await store.stat('big.bin')

  const together = await Promise.all(Array.from({ length: 5 }, async () => String(await buffer(await store.read('small.bin', { etag: small.etag })))))
  assert.deepEqual(together, Array(5).fill('small bytes'))
  assert.deepEqual(reads, ['small.bin'], 'five readers, one storage read')

  assert.equal(String(await buffer(await store.read('small.bin', { etag: small.etag }))), 'small bytes')
  assert.equal(reads.length, 2, 'a later read asks storage again: no bytes are kept')

  reads.length = 0
  const sha = 'b'.repeat(64)
  await Promise.all([
    buffer(await store.read('small.bin', { etag: small.etag, start: 0, end: 4 })),
    buffer(await store.read('small.bin', { etag: small.etag, start: 0, end: 4 })),
    buffer(await store.read('big.bin', { etag: big.etag })),
    buffer(await store.read('big.bin', { etag: big.etag })),
    buffer(await store.read('small.bin', { etag: small.etag })),
    assert.rejects(async () => buffer(await store.read('small.bin', { etag: small.etag, sha256: sha })), { name: 'IntegrityError' })
  ])
  assert.equal(reads.length, 6, 'ranges, blobs over the limit and reads with another check each go to storage')

  // A failure reaches every joiner, and the stale properties go.
  await writeFile(join(dir, 'small.tmp'), 'replaced')
  await rename(join(dir, 'small.tmp'), join(dir, 'small.bin'))
  reads.length = 0
  const failures = await Promise.allSettled(Array.from({ length: 3 }, async () => store.read('small.bin', { etag: small.etag })))
  assert.deepEqual(failures.map((f) => f.status === 'rejected' && (f.reason as { kind?: string }).kind), ['changed', 'changed', 'changed'])
  assert.equal(reads.length, 1)
  assert.notEqual((await store.stat('small.bin')).etag, small.etag)
})
