import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { installAction, listActions, readAction } from '../../src/launcher/actions.ts'
import { writeConfigMap } from '../helpers/configmap.ts'
import { tempDir } from '../helpers/tmp.ts'

test('actions: listed without the ConfigMap plumbing, read through its symlinks', async (t) => {
  const dir = await tempDir(t)
  await writeConfigMap(dir, { install: 'echo one\n', 'setup.sh': 'echo two\n' })
  assert.deepEqual(await listActions(dir), ['install', 'setup.sh'])
  const script = await readAction(dir, 'install')
  assert.equal(script.content.toString(), 'echo one\n')
  assert.match(script.sha256, /^[0-9a-f]{64}$/)
  await assert.rejects(readAction(dir, 'nope'), /no action "nope" in .*; the actions there are: install, setup\.sh/)
  await assert.rejects(readAction(dir, '..data'), /is not a file name/)
})

test('actions: copied executable (ConfigMap files are 0644), replaced atomically, no temp files left', async (t) => {
  const src = await tempDir(t)
  const host = await tempDir(t)
  await writeConfigMap(src, { install: 'echo one\n' })
  const target = await installAction(join(host, 'sub'), await readAction(src, 'install'))
  assert.equal(target, join(host, 'sub', 'install'))
  assert.equal((await stat(target)).mode & 0o777, 0o755)
  const inode = (await stat(target)).ino
  await writeConfigMap(src, { install: 'echo two\n' })
  await installAction(join(host, 'sub'), await readAction(src, 'install'))
  assert.equal(await readFile(target, 'utf8'), 'echo two\n')
  assert.notEqual((await stat(target)).ino, inode, 'the copy was rewritten in place, not renamed over')
  assert.deepEqual(await readdir(join(host, 'sub')), ['install'])
})
