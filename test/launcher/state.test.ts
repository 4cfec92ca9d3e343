import { test } from 'node:test'
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createOnceRecords, createStateDir, runKey } from '../../src/launcher/state.ts'
import { tempDir } from '../helpers/tmp.ts'

test('status.json: written whole, read back by the next launcher; the ready file comes and goes', async (t) => {
  const dir = join(await tempDir(t), 'state')
  const state = createStateDir(dir)
  await state.init()
  assert.equal(await state.read(), undefined)
  await state.write({ phase: 'running', action: 'install', args: ['a'], attempts: 1, cgroup: '/sys/fs/cgroup/pkg-serve-run.install' })
  const status = await state.read()
  assert.equal(status?.phase, 'running')
  assert.equal(status.cgroup, '/sys/fs/cgroup/pkg-serve-run.install')
  assert.match(status.updatedAt, /^\d{4}-/)
  assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith('.tmp')), [], 'a temp file was left behind')

  await state.setReady(true)
  assert.ok(existsSync(join(dir, 'ready')))
  // A new launcher starts not ready, whatever the earlier one left.
  await createStateDir(dir).init()
  assert.equal(existsSync(join(dir, 'ready')), false)
  await state.heartbeat()
  assert.ok(existsSync(join(dir, 'heartbeat')))

  await writeFile(join(dir, 'status.json'), '{"half": ')
  assert.equal(await state.read(), undefined, 'a broken status.json is no status')
})

test('--once records: same script and args only; a record that cannot be written throws', async (t) => {
  const hostDir = await tempDir(t)
  const once = createOnceRecords(hostDir)
  const key = runKey('abc', ['x'])
  assert.notEqual(key, runKey('abc', ['y']))
  assert.notEqual(key, runKey('abd', ['x']))
  assert.equal(await once.succeeded('install', key), undefined)
  await once.record('install', key, ['x'])
  assert.match((await once.succeeded('install', key))?.at ?? '', /^\d{4}-/)
  assert.equal(await once.succeeded('install', runKey('abc', ['y'])), undefined)
  assert.equal(JSON.parse(await readFile(join(hostDir, '.pkg-serve-once', 'install.json'), 'utf8')).action, 'install')

  if (process.getuid?.() === 0) return // root writes anyway; the launcher test covers it with a file in the way
  const readOnly = join(hostDir, 'ro')
  await mkdir(readOnly)
  await chmod(readOnly, 0o555)
  await assert.rejects(createOnceRecords(readOnly).record('install', key, []))
})
