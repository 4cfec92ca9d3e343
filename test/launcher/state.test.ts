import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createOnceRecords, createRunRecords, createStateDir, runKey, stillRunning, thisLauncher } from '../../src/launcher/state.ts'
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

test('run records: per action on the node, read back, forgotten; a live writer is told from a dead one', async (t) => {
  const host = await tempDir(t)
  const runs = createRunRecords(host)
  assert.equal(await runs.read('install'), undefined)
  const me = thisLauncher()
  assert.ok(me !== undefined && me.pid === process.pid && me.startTicks > 0)
  await runs.write({ phase: 'running', action: 'install', args: [], attempts: 1, cgroup: '/x/pkg-serve-run.install', launcher: me })
  await runs.write({ phase: 'succeeded', action: 'cleanup', args: [], attempts: 1 })
  assert.equal((await runs.read('install'))?.phase, 'running')
  assert.equal((await runs.read('cleanup'))?.phase, 'succeeded')
  assert.deepEqual((await readdir(join(host, '.pkg-serve-runs'))).sort(), ['cleanup.json', 'install.json'])
  await runs.forget('install')
  assert.equal(await runs.read('install'), undefined)
  await runs.forget('install') // nothing there: no error

  // This process wrote it: not "another launcher". A live other process with the same start
  // time is; the same PID with another start time (a reused PID) or a gone one is not.
  assert.equal(stillRunning(me), false)
  assert.equal(stillRunning(undefined), false)
  const other = spawn('sleep', ['30'])
  t.after(() => other.kill())
  await once(other, 'spawn')
  const pid = other.pid ?? 0
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19])
  assert.equal(stillRunning({ pid, startTicks: ticks }), true)
  assert.equal(stillRunning({ pid, startTicks: ticks - 1 }), false)
  other.kill()
  await once(other, 'exit')
  assert.equal(stillRunning({ pid, startTicks: ticks }), false)
})
