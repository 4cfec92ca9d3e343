import { test } from 'node:test'
import assert from 'node:assert/strict'
import { askableInOne, planResponse } from '../../src/http/conditional.ts'

const blob = { size: 1000, etag: '"0x8DC1"', lastModified: new Date('2026-01-02T03:04:05Z') }

test('no conditions: the whole blob', () => {
  assert.deepEqual(planResponse({}, blob), { status: 200 })
})

test('single ranges become 206 with inclusive bounds', () => {
  assert.deepEqual(planResponse({ range: 'bytes=0-99' }, blob), { status: 206, start: 0, end: 99 })
  // Range units are case-insensitive (RFC 9110 §14.1).
  assert.deepEqual(planResponse({ range: 'BYTES=0-99' }, blob), { status: 206, start: 0, end: 99 })
  assert.deepEqual(planResponse({ range: 'Bytes=-10' }, blob), { status: 206, start: 990, end: 999 })
  assert.deepEqual(planResponse({ range: 'bytes=900-' }, blob), { status: 206, start: 900, end: 999 })
  assert.deepEqual(planResponse({ range: 'bytes=-10' }, blob), { status: 206, start: 990, end: 999 })
  assert.deepEqual(planResponse({ range: 'bytes=990-5000' }, blob), { status: 206, start: 990, end: 999 })
  // Overlapping ranges that combine into one are served as that one.
  assert.deepEqual(planResponse({ range: 'bytes=0-10,5-20' }, blob), { status: 206, start: 0, end: 20 })
})

test('unsatisfiable ranges are 416', () => {
  assert.deepEqual(planResponse({ range: 'bytes=1000-' }, blob), { status: 416 })
  assert.deepEqual(planResponse({ range: 'bytes=5000-6000' }, blob), { status: 416 })
  assert.deepEqual(planResponse({ range: 'bytes=0-' }, { ...blob, size: 0 }), { status: 416 })
})

test('malformed, multiple and non-byte ranges are ignored (whole blob)', () => {
  for (const range of ['bytes=abc', 'bytes=5-2', 'items=0-5', 'bytes=0-1,500-501', 'garbage', 'bytes=', 'bytes=--1']) {
    assert.deepEqual(planResponse({ range }, blob), { status: 200 }, range)
  }
})

test('If-Range with the current strong ETag or exact date keeps the range; anything else sends it whole', () => {
  const range = 'bytes=10-19'
  assert.equal(planResponse({ range, 'if-range': '"0x8DC1"' }, blob).status, 206)
  assert.equal(planResponse({ range, 'if-range': blob.lastModified.toUTCString() }, blob).status, 206)
  assert.equal(planResponse({ range, 'if-range': '"0x8DC2"' }, blob).status, 200)
  assert.equal(planResponse({ range, 'if-range': 'W/"0x8DC1"' }, blob).status, 200)
  assert.equal(planResponse({ range, 'if-range': 'Fri, 02 Jan 2026 03:04:04 GMT' }, blob).status, 200)
  assert.equal(planResponse({ range, 'if-range': 'not a date' }, blob).status, 200)
})

test('If-None-Match and If-Modified-Since give 304 when the blob is unchanged', () => {
  assert.deepEqual(planResponse({ 'if-none-match': '"0x8DC1"' }, blob), { status: 304 })
  assert.deepEqual(planResponse({ 'if-none-match': '"x", "0x8DC1"' }, blob), { status: 304 })
  assert.deepEqual(planResponse({ 'if-none-match': 'W/"0x8DC1"' }, blob), { status: 304 })
  assert.deepEqual(planResponse({ 'if-none-match': '*' }, blob), { status: 304 })
  assert.deepEqual(planResponse({ 'if-none-match': '"other"' }, blob), { status: 200 })
  assert.deepEqual(planResponse({ 'if-modified-since': 'Sat, 03 Jan 2026 00:00:00 GMT' }, blob), { status: 304 })
  assert.deepEqual(planResponse({ 'if-modified-since': 'Thu, 01 Jan 2026 00:00:00 GMT' }, blob), { status: 200 })
  // If-None-Match wins over If-Modified-Since.
  assert.deepEqual(planResponse({ 'if-none-match': '"other"', 'if-modified-since': 'Sat, 03 Jan 2026 00:00:00 GMT' }, blob), { status: 200 })
})

test('a suffix range longer than the blob is all of it, as 206 (RFC 9110 §14.1.2)', () => {
  assert.deepEqual(planResponse({ range: `bytes=-${blob.size + 1000}` }, blob), { status: 206, start: 0, end: blob.size - 1 })
  assert.deepEqual(planResponse({ range: `bytes=-${blob.size}` }, blob), { status: 206, start: 0, end: blob.size - 1 })
  assert.deepEqual(planResponse({ range: 'bytes=-10' }, blob), { status: 206, start: blob.size - 10, end: blob.size - 1 })
  assert.deepEqual(planResponse({ range: 'bytes=-0' }, blob), { status: 416 })
  assert.deepEqual(planResponse({ range: 'bytes=-5' }, { ...blob, size: 0 }), { status: 416 })
})

test('askableInOne: what storage can answer in one GET, before any validator is known', () => {
  assert.deepEqual(askableInOne({}), {})
  assert.deepEqual(askableInOne({ range: 'BYTES=5-' }), { start: 5 })
  assert.deepEqual(askableInOne({ range: 'bytes=10-19' }), { start: 10, end: 19 })
  assert.deepEqual(askableInOne({ range: 'bytes= 5-' }), { start: 5 })
  for (const range of ['bytes=-10', 'bytes=1-2,5-6', 'bytes=9-3', 'items=0-1', 'bytes=x-', `bytes=${'9'.repeat(30)}-`]) {
    assert.equal(askableInOne({ range }), undefined, range)
  }
  assert.equal(askableInOne({ 'if-none-match': '"a"' }), undefined)
  assert.equal(askableInOne({ 'if-modified-since': 'Sat, 03 Jan 2026 00:00:00 GMT' }), undefined)
  assert.equal(askableInOne({ range: 'bytes=0-1', 'if-range': '"a"' }), undefined)
})
