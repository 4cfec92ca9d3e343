import { test } from 'node:test'
import assert from 'node:assert/strict'
import { ManifestError, parseManifest } from '../../src/manifest/parse.ts'

function issuesOf (text: string): string {
  try {
    parseManifest(text)
  } catch (err) {
    assert.ok(err instanceof ManifestError, `expected ManifestError, got ${String(err)}`)
    return err.message
  }
  assert.fail('manifest was accepted')
}

test('a valid manifest is indexed by package and tag', () => {
  const m = parseManifest(`
[mypackage.latest]
path = 'mypackage-123456.deb'

[mypackage.'1.2.3']
path = 'dir/mypackage-1.2.3.deb'
sha256 = '${'AB'.repeat(32)}'
content_type = 'application/vnd.debian.binary-package'
filename = 'mypackage_1.2.3_amd64.deb'
`)
  assert.equal(m.entryCount, 2)
  const tags = m.packages.get('mypackage')
  assert.ok(tags)
  assert.deepEqual([...tags.keys()].sort(), ['1.2.3', 'latest'])
  assert.deepEqual(tags.get('1.2.3'), {
    name: 'mypackage',
    tag: '1.2.3',
    path: 'dir/mypackage-1.2.3.deb',
    sha256: 'ab'.repeat(32),
    contentType: 'application/vnd.debian.binary-package',
    filename: 'mypackage_1.2.3_amd64.deb'
  })
  assert.deepEqual(tags.get('latest'), { name: 'mypackage', tag: 'latest', path: 'mypackage-123456.deb' })
})

test('an empty manifest is valid and has no packages', () => {
  assert.equal(parseManifest('').packages.size, 0)
})

test('syntax errors name the line and column', () => {
  const message = issuesOf("[a.b]\npath = 'x'\nfoo = \n")
  assert.match(message, /^packages\.toml: line 3, column 7: TOML syntax error: Unexpected character/)
  assert.doesNotMatch(message, /\n/)
})

test('unknown keys name the table and the key', () => {
  assert.match(issuesOf("[pkg.latest]\npath = 'x.deb'\nsha = 'abc'\n"), /\[pkg\.latest\] key "sha": unknown key/)
})

test('a missing path, wrong types and bad values name the table and key', () => {
  assert.match(issuesOf("[pkg.latest]\nfilename = 'x'\n"), /\[pkg\.latest\] key "path": is required/)
  assert.match(issuesOf('[pkg.latest]\npath = 42\n'), /\[pkg\.latest\] key "path": expected a string, found a number/)
  assert.match(issuesOf("[pkg.latest]\npath = 'a'\nsha256 = 'abc'\n"), /\[pkg\.latest\] key "sha256": must be 64 hexadecimal/)
  assert.match(issuesOf("[pkg.latest]\npath = 'a'\ncontent_type = 'not a type'\n"), /key "content_type": must be a media type/)
  assert.match(issuesOf("[pkg.latest]\npath = 'a'\nfilename = 'a/b'\n"), /key "filename": must not contain/)
  assert.match(issuesOf("[pkg.latest]\npath = 'a'\nfilename = \"a\\r\\nSet-Cookie: x\"\n"), /key "filename": must not contain/)
})

test('paths that could leave the container are rejected', () => {
  for (const path of ['../secret', 'a/../../b', './a', 'a/./b', '/abs', 'a\\b', 'a//b', 'a/', '', '..', 'a\u0000b', 'x'.repeat(1025)]) {
    assert.match(issuesOf(`[pkg.latest]\npath = ${JSON.stringify(path)}\n`), /\[pkg\.latest\] key "path": must/, path)
  }
  assert.equal(parseManifest(`[pkg.latest]\npath = ${JSON.stringify('a/b.c/..d/e..')}\n`).entryCount, 1)
})

test('bad package and tag names are rejected', () => {
  assert.match(issuesOf("['bad name'.latest]\npath = 'a'\n"), /\['bad name'\]: package name must match/)
  assert.match(issuesOf("[pkg.'a/b']\npath = 'a'\n"), /\[pkg\.'a\/b'\]: tag must match/)
  assert.match(issuesOf(`[${'a'.repeat(129)}.latest]\npath = 'a'\n`), /package name must match/)
  assert.match(issuesOf("[pkg]\nlatest = 'a.deb'\n"), /\[pkg\] key "latest": expected a table with "path", found a string/)
  assert.match(issuesOf("pkg = 'a.deb'\n"), /key "pkg": expected a table of tags/)
})

test('every problem is reported at once', () => {
  const message = issuesOf("[a.latest]\npath = '../x'\n[b.latest]\nnope = 1\npath = 'y'\n")
  assert.match(message, /\[a\.latest\] key "path"/)
  assert.match(message, /\[b\.latest\] key "nope"/)
})

test('names such as __proto__ are plain entries, never prototype keys', () => {
  const m = parseManifest("[__proto__.latest]\npath = 'p.deb'\n[constructor.x]\npath = 'c.deb'\n[toString.'__proto__']\npath = 't.deb'\n")
  assert.equal(m.packages.get('__proto__')?.get('latest')?.path, 'p.deb')
  assert.equal(m.packages.get('toString')?.get('__proto__')?.path, 't.deb')
  assert.equal(m.packages.get('hasOwnProperty'), undefined)
  assert.equal(({} as Record<string, unknown>).latest, undefined)
})

test('any name matching the pattern is a package or tag, Object.prototype members included', () => {
  const m = parseManifest("[hasOwnProperty.toString]\npath = 'a'\n[__proto__.__proto__]\npath = 'b'\n[toString.constructor]\npath = 'c'\n")
  assert.equal(m.entryCount, 3)
  assert.equal(m.packages.get('hasOwnProperty')?.get('toString')?.path, 'a')
  assert.equal(m.packages.get('__proto__')?.get('__proto__')?.path, 'b')
  assert.equal(m.packages.get('toString')?.get('constructor')?.path, 'c')
})

test('an unquoted dotted tag gets the hint to quote it', () => {
  assert.match(issuesOf("[app.1.0]\npath = 'a.deb'\n"), /\[app\.1\.0\]: is read as package "app", tag "1" and a table "0" inside it: a tag with dots must be quoted, \[app\.'1\.0'\]/)
  assert.match(issuesOf("[app.1.0.2]\npath = 'a.deb'\n"), /tables "0", "2" inside it: a tag with dots must be quoted, \[app\.'1\.0\.2'\]/)
  const two = issuesOf("[app.1.0]\npath = 'a.deb'\n[app.1.1]\npath = 'b.deb'\n")
  assert.match(two, /\[app\.1\.0\]: .*quoted, \[app\.'1\.0'\]; \[app\.1\.1\]: .*quoted, \[app\.'1\.1'\]/)
  // A real mistake inside such a table is reported as itself, not as a dotted tag.
  assert.match(issuesOf("[app.1]\npath = 'a.deb'\n[app.1.x]\ncolor = 1\n"), /\[app\.1\] key "x": unknown key/)
})

test('a BOM, bytes that were not UTF-8 and a manifest over 4 MiB are refused, each saying why', () => {
  assert.match(issuesOf("\uFEFF[a.b]\npath = 'a'\n"), /line 1, column 1: starts with a byte order mark \(BOM/)
  assert.match(issuesOf("[a.b]\npath = 'a\uFFFD'\n"), /line 2, column 10: is not valid UTF-8/)
  assert.match(issuesOf(`[a.b]\npath = 'a'\n#${'x'.repeat(4 * 1024 * 1024)}\n`), /a manifest may be at most 4194304 bytes/)
})
