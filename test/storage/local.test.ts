import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, rename, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buffer } from 'node:stream/consumers'
import { createLocalStore } from '../../src/storage/local.ts'
import { StorageError } from '../../src/storage/types.ts'
import { tempDir } from '../helpers/tmp.ts'

async function kindOf (promise: Promise<unknown>): Promise<string> {
  try {
    await promise
    return 'ok'
  } catch (err) {
    assert.ok(err instanceof StorageError, String(err))
    return err.kind
  }
}

test('local store: stat, ranged reads and conditional text reads', async (t) => {
  const dir = await tempDir(t)
  await mkdir(join(dir, 'sub'))
  await writeFile(join(dir, 'sub', 'a.bin'), '0123456789')
  const store = createLocalStore(dir)

  const p = await store.stat('sub/a.bin')
  assert.equal(p.size, 10)
  assert.match(p.etag, /^"[0-9a-f-]+"$/)
  assert.equal(await buffer(await store.read('sub/a.bin', { etag: p.etag })).then(String), '0123456789')
  assert.equal(await buffer(await store.read('sub/a.bin', { etag: p.etag, start: 3, end: 5 })).then(String), '345')

  await writeFile(join(dir, 'packages.toml'), 'x = 1')
  const first = await store.readText('packages.toml')
  assert.ok(first.changed)
  assert.deepEqual(await store.readText('packages.toml', first.etag), { changed: false })
})

test('local store: a replaced file is another version; a read pinned to the old one fails', async (t) => {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'a.bin'), 'one')
  const store = createLocalStore(dir)
  const { etag } = await store.stat('a.bin')
  await writeFile(join(dir, 'a.bin.tmp'), 'two!')
  await rename(join(dir, 'a.bin.tmp'), join(dir, 'a.bin'))
  assert.equal(await kindOf(store.read('a.bin', { etag })), 'changed')
})

test('local store: missing files and directories are not-found; nothing outside the directory is reachable', async (t) => {
  const root = await tempDir(t)
  const dir = join(root, 'pkg')
  await mkdir(dir)
  await writeFile(join(root, 'secret'), 'secret')
  await mkdir(join(dir, 'sub'))
  const store = createLocalStore(dir)
  assert.equal(await kindOf(store.stat('nope')), 'not-found')
  assert.equal(await kindOf(store.stat('sub')), 'not-found')
  assert.equal(await kindOf(store.stat('../secret')), 'not-found')
  assert.equal(await kindOf(store.readText('../secret')), 'not-found')
  assert.equal(await kindOf(store.read('sub/../../secret', { etag: '"x"' })), 'not-found')
  await symlink(join(root, 'secret'), join(dir, 'link'))
  // A symlink placed in the container by its owner is followed (the owner chose it).
  assert.equal(await kindOf(store.stat('link')), 'ok')
})
