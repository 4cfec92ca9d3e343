// Splits what a script prints into lines for the log, as it comes. What it holds per stream is
// bounded whatever the script prints (binary, no newlines, a gigabyte): one line buffer of
// maxBytes and the chunk being read. A longer line is handed on in pieces of maxBytes, cut on a
// UTF-8 character boundary, and everything after it still arrives. It never drops bytes and
// never reads ahead of the one who logs: each piece is awaited before the next read (backpressure
// goes to the script's pipe, not into memory).

import { StringDecoder } from 'node:string_decoder'
import type { Readable } from 'node:stream'

/** Lines longer than this are logged in pieces (SPEC: 16 KiB). */
export const MAX_LINE_BYTES = 16 * 1024

/**
 * Receives one line, or one piece of a long line (`continues`: more of the same line follows).
 * May return a promise: the next piece waits for it.
 */
export type LineSink = (text: string, continues: boolean) => void | Promise<void>

/** Reads `stream` to its end, handing each line (without its newline) to `sink`. */
export async function forEachLine (stream: Readable, sink: LineSink, maxBytes = MAX_LINE_BYTES): Promise<void> {
  // A copy, never slices of the chunks: slices would keep whole 64 KiB read buffers alive.
  const line = Buffer.allocUnsafe(maxBytes)
  let length = 0
  // Keeps the bytes of a character cut at a piece boundary for the next piece.
  const decoder = new StringDecoder('utf8')

  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk
    let start = 0
    while (start < bytes.length) {
      const newline = bytes.indexOf(10, start)
      const end = newline === -1 ? bytes.length : newline
      while (start < end) {
        // Full, and more of the same line is coming: hand on a piece. (Checked before copying,
        // so a line of exactly maxBytes is one line, not a piece and an empty line.)
        if (length === maxBytes) {
          await sink(decoder.write(line.subarray(0, length)), true)
          length = 0
        }
        const take = Math.min(maxBytes - length, end - start)
        bytes.copy(line, length, start, start + take)
        length += take
        start += take
      }
      if (newline === -1) break
      await sink(withoutCr(decoder.write(line.subarray(0, length)) + decoder.end()), false)
      length = 0
      start = newline + 1
    }
  }
  // The last line, when the stream ended without a newline.
  if (length > 0) await sink(withoutCr(decoder.write(line.subarray(0, length)) + decoder.end()), false)
}

/** CRLF line ends (Windows tools, some progress bars) are one line end, as readline treats them. */
function withoutCr (text: string): string {
  return text.endsWith('\r') ? text.slice(0, -1) : text
}
