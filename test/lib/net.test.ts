import { test } from 'node:test'
import assert from 'node:assert/strict'
import { bracketHost, withoutQuery } from '../../src/lib/net.ts'

test('bracketHost brackets IPv6 literals only', () => {
  assert.equal(bracketHost('::1'), '[::1]')
  assert.equal(bracketHost('fe80::1'), '[fe80::1]')
  assert.equal(bracketHost('127.0.0.1'), '127.0.0.1')
  assert.equal(bracketHost('localhost'), 'localhost')
  assert.equal(bracketHost('acct.blob.core.windows.net'), 'acct.blob.core.windows.net')
})

test('withoutQuery never shows a query or fragment, URL or not', () => {
  assert.equal(withoutQuery('https://a.blob.core.windows.net/pkg?sv=1&sig=SECRET'), 'https://a.blob.core.windows.net/pkg')
  assert.equal(withoutQuery(new URL('http://127.0.0.1:10000/acct?sig=SECRET#x')), 'http://127.0.0.1:10000/acct')
  assert.equal(withoutQuery('htp://typo/x?sig=SECRET'), 'htp://typo/x')
  assert.equal(withoutQuery('not a url ?sig=SECRET\nmore'), 'not a url ')
  assert.equal(withoutQuery('plain'), 'plain')
})
