import { test } from 'node:test'
import assert from 'node:assert/strict'
import { PassThrough, Readable } from 'node:stream'
import { forEachLine } from '../../src/launcher/output.ts'

async function lines (chunks: Array<string | Buffer>, max: number): Promise<Array<[string, boolean]>> {
  const out: Array<[string, boolean]> = []
  await forEachLine(Readable.from(chunks.map((c) => Buffer.from(c))), (text, continues) => { out.push([text, continues]) }, max)
  return out
}

test('lines split across chunks, empty lines, CRLF, and a last line without a newline', async () => {
  assert.deepEqual(await lines(['ab', 'c\n\nde', 'f\r\n', 'tail'], 16), [['abc', false], ['', false], ['def', false], ['tail', false]])
})

test('a long line comes in pieces of max bytes; a line of exactly max bytes is one line', async () => {
  assert.deepEqual(await lines(['0123456789abc\n', '01234567\n'], 4), [
    ['0123', true], ['4567', true], ['89ab', true], ['c', false],
    ['0123', true], ['4567', false]
  ])
})

test('a UTF-8 character cut by a piece boundary is not broken', async () => {
  // "é" is two bytes: with max 3, "aé" + "é" → pieces "aé" (3 bytes), then "é".
  const pieces = await lines(['aéé\n'], 3)
  assert.deepEqual(pieces.map(([t]) => t).join(''), 'aéé')
  assert.ok(pieces.every(([t]) => !t.includes('\uFFFD')), JSON.stringify(pieces))
})

test('the sink is awaited: nothing more is read while it is busy', async () => {
  const input = new PassThrough()
  let busy = false
  const seen: string[] = []
  const reading = forEachLine(input, async (text) => {
    assert.equal(busy, false, 'a line came while the previous one was still being logged')
    busy = true
    seen.push(text)
    await new Promise((resolve) => setImmediate(resolve))
    busy = false
  }, 8)
  input.end('one\ntwo\nthree long line\n')
  await reading
  assert.deepEqual(seen, ['one', 'two', 'three lo', 'ng line'])
})
