import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseManifest } from '../../src/manifest/parse.ts'
import { setEntry } from '../../src/manifest/edit.ts'

const ORIGINAL = `# Packages for the fleet. Keep sorted.

[mypackage.latest] # moved by CI
path = 'mypackage-1.deb'

# pinned for the GPU nodes
[mypackage.'1.2.3']
path = 'mypackage-1.2.3.deb'
filename = 'mypackage_1.2.3_amd64.deb'

["other"."v1"]
path = "other.bin"
`

test('replacing an entry keeps every other line, comment and entry as written', () => {
  const next = setEntry(ORIGINAL, { name: 'mypackage', tag: 'latest', path: 'mypackage-2.deb', sha256: 'a'.repeat(64) })
  assert.equal(next, ORIGINAL.replace("[mypackage.latest] # moved by CI\npath = 'mypackage-1.deb'", `[mypackage.latest]\npath = 'mypackage-2.deb'\nsha256 = '${'a'.repeat(64)}'`))
})

test('a quoted header is found and replaced', () => {
  const next = setEntry(ORIGINAL, { name: 'other', tag: 'v1', path: 'other-2.bin' })
  assert.match(next, /\[other\.v1\]\npath = 'other-2\.bin'\n$/)
  assert.ok(next.startsWith(ORIGINAL.slice(0, ORIGINAL.indexOf('["other"'))))
  const next2 = setEntry(ORIGINAL, { name: 'mypackage', tag: '1.2.3', path: 'x.deb' })
  assert.match(next2, /# pinned for the GPU nodes\n\[mypackage\.'1\.2\.3'\]\npath = 'x\.deb'\n\n\["other"/)
})

test('a new entry is appended; an empty manifest becomes one entry', () => {
  const next = setEntry(ORIGINAL, { name: 'new', tag: 'latest', path: "it's here.deb" })
  assert.ok(next.startsWith(ORIGINAL.trimEnd()))
  assert.equal(parseManifest(next).packages.get('new')?.get('latest')?.path, "it's here.deb")
  assert.equal(setEntry('', { name: 'a', tag: 'b', path: 'c' }), "[a.b]\npath = 'c'\n")
})

test('an invalid manifest is not edited; an entry in another form is refused, not duplicated', () => {
  assert.throws(() => setEntry('[a.b]\nnope = 1\n', { name: 'a', tag: 'c', path: 'x' }), /key "nope": unknown key/)
  assert.throws(() => setEntry("[a]\nb = { path = 'x' }\n", { name: 'a', tag: 'b', path: 'y' }), /in a form publish cannot edit/)
})
