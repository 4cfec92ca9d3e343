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
  const counting: BlobStore = { ...local, stat: async (p) => { stats++; return await local.stat(p) } }
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
