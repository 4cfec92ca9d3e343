import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createManifestCache } from '../../src/manifest/cache.ts'
import { createLocalStore } from '../../src/storage/local.ts'
import { tempDir } from '../helpers/tmp.ts'

test('a rejected manifest is logged once per version, and counted plurals read right', async (t) => {
  const dir = join(await tempDir(t), 'pkg')
  await mkdir(dir)
  const manifest = join(dir, 'packages.toml')
  await writeFile(manifest, "[a.latest]\npath = 'a.txt'\n")
  const lines: Array<{ level: string, msg: string }> = []
  const cache = createManifestCache({
    store: createLocalStore(dir),
    path: 'packages.toml',
    pollIntervalSeconds: 0,
    log: { info: (_o, msg) => lines.push({ level: 'info', msg }), warn: (_o, msg) => lines.push({ level: 'warn', msg }) }
  })
  assert.equal(await cache.check(), 'loaded')
  assert.match(lines.at(-1)?.msg ?? '', /loaded: 1 package, 1 entry$/)

  await writeFile(manifest, "[a.latest]\npath = 'a.txt'\ncolour = 1\n")
  for (let i = 0; i < 5; i++) assert.equal(await cache.check(), 'rejected')
  const warnings = lines.filter((l) => l.level === 'warn')
  assert.equal(warnings.length, 1, warnings.map((w) => w.msg).join('\n'))
  assert.match(warnings[0]?.msg ?? '', /manifest rejected \(ETag "[^"]+"; said once until it changes\): .*unknown key .*still serving the manifest/)
  assert.notEqual(cache.status().lastError, null)

  await writeFile(manifest, "[a.latest]\npath = 'a.txt'\ncolour = 2\n# another version\n")
  assert.equal(await cache.check(), 'rejected')
  assert.equal(lines.filter((l) => l.level === 'warn').length, 2, 'a new version is reported again')

  await writeFile(manifest, "[a.latest]\npath = 'a.txt'\n[b.latest]\npath = 'b.txt'\n")
  assert.equal(await cache.check(), 'loaded')
  assert.match(lines.at(-1)?.msg ?? '', /loaded: 2 packages, 2 entries$/)
  assert.equal(cache.status().lastError, null)
  assert.equal(await cache.check(), 'unchanged')
})
