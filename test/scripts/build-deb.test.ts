import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { EXAMPLE_DEB, buildDeb } from '../../scripts/build-deb.ts'
import { tempDir } from '../helpers/tmp.ts'

const hasDpkg = spawnSync('dpkg-deb', ['--version']).status === 0

test('the example .deb is a package dpkg-deb reads, built the same every time', { skip: hasDpkg ? false : 'dpkg-deb is not installed' }, async (t) => {
  const dir = await tempDir(t)
  const deb = join(dir, 'x.deb')
  const bytes = buildDeb(EXAMPLE_DEB)
  assert.deepEqual(buildDeb(EXAMPLE_DEB), bytes)
  await writeFile(deb, bytes)
  const info = spawnSync('dpkg-deb', ['--field', deb, 'Package', 'Version', 'Architecture'], { encoding: 'utf8' })
  assert.equal(info.status, 0, info.stderr)
  assert.equal(info.stdout, 'Package: pkg-serve-hello\nVersion: 1.0.0\nArchitecture: all\n')
  const contents = spawnSync('dpkg-deb', ['--contents', deb], { encoding: 'utf8' })
  assert.match(contents.stdout, /\.\/usr\/share\/pkg-serve-hello\/hello\.txt/)
  const extract = spawnSync('dpkg-deb', ['-x', deb, join(dir, 'root')], { encoding: 'utf8' })
  assert.equal(extract.status, 0, extract.stderr)
  assert.equal(spawnSync('cat', [join(dir, 'root/usr/share/pkg-serve-hello/hello.txt')], { encoding: 'utf8' }).stdout, 'Hello from a package served by pkg-serve.\n')
})
