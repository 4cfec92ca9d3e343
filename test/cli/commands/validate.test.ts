// `pkg-serve validate` as a real process: the server's rules (size, UTF-8, names), and --remote
// against Azurite. Each file validate refuses, the server refuses too, and the other way round.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startAzurite } from '../../helpers/azurite.ts'
import { localApp } from '../../helpers/app.ts'
import { runCli } from '../../helpers/cli.ts'
import { tempDir } from '../../helpers/tmp.ts'

const names = "[hasOwnProperty.toString]\npath = 'a.txt'\n[__proto__.__proto__]\npath = 'a.txt'\n[constructor.valueOf]\npath = 'a.txt'\n"

const cases: Array<[string, string | Buffer, RegExp]> = [
  ['syntax', "[a.b]\npath = 'x'\n[c\n", /line 3, column \d+: TOML syntax error/],
  ['unknown key', "[a.b]\npath = 'x'\ncolor = 1\n", /\[a\.b\] key "color": unknown key/],
  ['path', "[a.b]\npath = '../x'\n", /\[a\.b\] key "path": must not contain "\." or "\.\." segments/],
  ['name', "['a b'.c]\npath = 'x'\n", /\['a b'\]: package name must match/],
  ['dotted tag', "[app.1.0]\npath = 'app.deb'\n", /\[app\.1\.0\]: is read as package "app", tag "1" and a table "0" inside it: a tag with dots must be quoted, \[app\.'1\.0'\]/],
  ['BOM', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("[a.b]\npath = 'x'\n")]), /line 1, column 1: starts with a byte order mark \(BOM: the invisible bytes EF BB BF/],
  ['not UTF-8', Buffer.concat([Buffer.from("[a.b]\npath = 'x"), Buffer.from([0xff]), Buffer.from("'\n")]), /line 2, column 10: is not valid UTF-8 \((byte 15 is 0xff|bytes that are not UTF-8)/],
  ['too large', `[a.b]\npath = 'x'\n${'#'.repeat(4 * 1024 * 1024)}\n`, /is 419432\d bytes; a manifest may be at most 4194304 bytes \(4 MiB\)/]
]

test('validate refuses what the server refuses, with one line per problem and no stack', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'bad.toml')
  for (const [what, text, pattern] of cases) {
    await writeFile(file, text)
    const r = runCli(['validate', file])
    assert.equal(r.status, 1, `${what}: ${r.stdout}`)
    assert.match(r.stderr, pattern, what)
    assert.doesNotMatch(r.stderr, /\n\s+at /)
  }
})

test('the server rejects the same files, and accepts any name the pattern allows', async (t) => {
  const { app, put } = await localApp(t, { 'packages.toml': names, 'a.txt': 'A' })
  assert.equal((await app.inject('/readyz')).statusCode, 200)
  for (const [name, tag] of [['hasOwnProperty', 'toString'], ['__proto__', '__proto__'], ['constructor', 'valueOf']]) {
    const res = await app.inject(`/pkg/${name}/${tag}`)
    assert.equal(res.statusCode, 200, `${name}/${tag}: ${res.body}`)
    assert.equal(res.body, 'A')
  }
  assert.equal((await app.inject('/pkg/toString/x')).statusCode, 404)
  const listed = (await app.inject('/pkg')).json<{ packages: Array<{ name: string }> }>()
  assert.deepEqual(listed.packages.map((p) => p.name).sort(), ['__proto__', 'constructor', 'hasOwnProperty'])
  for (const [what, text, pattern] of cases) {
    if (what === 'too large') continue // the store refuses it before parsing: see the storage tests
    await put('packages.toml', text)
    const check = await app.manifests.check()
    assert.equal(check, 'rejected', what)
    assert.match(app.manifests.status().lastError?.message ?? '', pattern, what)
  }
})

test('validate accepts any name the pattern allows, and --remote checks every path', async (t) => {
  const dir = await tempDir(t)
  const good = join(dir, 'good.toml')
  await writeFile(good, names)
  const ok = runCli(['validate', good])
  assert.equal(ok.status, 0, ok.stderr)
  assert.match(ok.stdout, /good\.toml: valid \(3 packages, 3 entries\)/)
  await writeFile(good, "[one.latest]\npath = 'one.deb'\n")
  assert.match(runCli(['validate', good]).stdout, /valid \(1 package, 1 entry\)/)

  const azurite = await startAzurite(t)
  const container = await azurite.container('pkg')
  await container.getBlockBlobClient('pkg0.deb').uploadData(Buffer.from('0'))
  await container.getBlockBlobClient('pkg1.deb').uploadData(Buffer.from('1'))
  const env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString }
  await writeFile(good, "[pkg0.latest]\npath = 'pkg0.deb'\n[pkg1.latest]\npath = 'pkg1.deb'\n")
  const remote = runCli(['validate', good, '--remote', azurite.blobEndpoint], env)
  assert.equal(remote.status, 0, remote.stderr)
  assert.match(remote.stdout, /valid \(2 packages, 2 entries\); every path exists/)
  await writeFile(good, "[pkg0.latest]\npath = 'pkg0.deb'\n[gone.latest]\npath = 'gone.deb'\n")
  const missing = runCli(['validate', good, '--remote', azurite.blobEndpoint], env)
  assert.equal(missing.status, 1)
  assert.match(missing.stderr, /\[gone\.latest\] path "gone\.deb": blob "gone\.deb" in container "pkg" does not exist/)
})
