import { test } from 'node:test'
import assert from 'node:assert/strict'
import { parseToml } from '../../src/manifest/toml.ts'

const MEMBERS = ['toString', 'hasOwnProperty', '__proto__', 'constructor', 'valueOf', 'isPrototypeOf', '__defineGetter__']

test('keys named after Object.prototype members are kept, on null-prototype tables', () => {
  for (const n of MEMBERS) {
    const text = `[${n}.x]\npath = 'a'\n[a.${n}]\npath = 'b'\n[${n}.${n}]\npath = 'c'\n[q.'1.0']\ni = { ${n} = 1 }\nd.${n}.z = 2\n`
    const doc = parseToml(text)
    assert.equal(Object.getPrototypeOf(doc), null)
    assert.deepEqual(JSON.parse(JSON.stringify(doc)), {
      [n]: { x: { path: 'a' }, [n]: { path: 'c' } },
      a: { [n]: { path: 'b' } },
      q: { '1.0': { i: { [n]: 1 }, d: { [n]: { z: 2 } } } }
    }, n)
    assert.deepEqual(Object.keys(doc.a ?? {}), [n])
  }
  // Nothing landed on the shared prototype objects.
  assert.equal(Object.hasOwn(Object.prototype.toString, 'path'), false)
  assert.equal(Object.hasOwn(Object.prototype, 'x'), false)
})

test('syntax errors keep the library\'s line and column', () => {
  assert.throws(() => parseToml("[a.b]\npath = 'x'\n[c\n"), (err: Error & { line?: number, col?: number }) => {
    assert.equal(err.line, 2)
    assert.match(err.message, /^Unexpected character/)
    return true
  })
})

test('values: dates, arrays, inline tables', () => {
  const doc = parseToml('a = 2020-01-01T00:00:00Z\nb = [1, { x = 1 }]\n')
  assert.ok(doc.a instanceof Date)
  assert.deepEqual(JSON.parse(JSON.stringify(doc.b)), [1, { x: 1 }])
})
