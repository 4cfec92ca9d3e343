// Decides how to answer a download request from its conditional and Range headers and the
// blob's validators: 200 whole, 206 one range, 304 not modified, or 416 unsatisfiable; and
// which requests storage can answer in one read, before any validator is known.
// Pure: no I/O, so every case can be tested alone. Only single byte ranges are served;
// anything else (multiple ranges, other units, malformed) is answered whole, as RFC 9110 allows.

import fresh from 'fresh'
import parseRange from 'range-parser'

export interface Validators {
  readonly size: number
  readonly etag: string
  readonly lastModified: Date
}

export interface RequestHeaders {
  readonly 'if-none-match'?: string | undefined
  readonly 'if-modified-since'?: string | undefined
  readonly 'if-range'?: string | undefined
  readonly range?: string | undefined
}

export type Plan =
  | { readonly status: 200 }
  | { readonly status: 206, readonly start: number, readonly end: number }
  | { readonly status: 304 }
  | { readonly status: 416 }

/** True when If-Range allows the Range to apply (no If-Range, or it names this exact version). */
function ifRangeHolds (ifRange: string | undefined, v: Validators): boolean {
  if (ifRange === undefined) return true
  const value = ifRange.trim()
  if (value.startsWith('"') || value.startsWith('W/')) {
    // If-Range needs a strong match: a weak tag never matches.
    return !value.startsWith('W/') && value === v.etag
  }
  const date = Date.parse(value)
  if (Number.isNaN(date)) return false
  // HTTP dates have one-second precision; the date must equal Last-Modified exactly.
  return Math.floor(date / 1000) === Math.floor(v.lastModified.getTime() / 1000)
}

// RFC 9110 byte-ranges-specifier; range-parser alone would call malformed input unsatisfiable (416),
// where the RFC says to ignore it.
const BYTE_RANGES = /^bytes=[ \t]*(\d+-\d*|-\d+)[ \t]*(,[ \t]*(\d+-\d*|-\d+)[ \t]*)*$/

/** The Range header with its unit in lower case: range units are case-insensitive (RFC 9110 §14.1). */
function rangeOf (headers: RequestHeaders): string | undefined {
  return headers.range?.replace(/^bytes=/i, 'bytes=')
}

function wellFormed (range: string): boolean {
  if (!BYTE_RANGES.test(range)) return false
  // A first-pos after its last-pos makes the whole header invalid (ignored), not unsatisfiable.
  return range.slice(6).split(',').every((spec) => {
    const [first, last] = spec.trim().split('-')
    return first === '' || last === '' || first === undefined || last === undefined || BigInt(first) <= BigInt(last)
  })
}

export function planResponse (headers: RequestHeaders, v: Validators): Plan {
  if (headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined) {
    const req = {
      ...(headers['if-none-match'] !== undefined && { 'if-none-match': headers['if-none-match'] }),
      ...(headers['if-modified-since'] !== undefined && { 'if-modified-since': headers['if-modified-since'] })
    }
    if (fresh(req, { etag: v.etag, 'last-modified': v.lastModified.toUTCString() })) return { status: 304 }
  }

  const range = rangeOf(headers)
  if (range === undefined || !wellFormed(range) || !ifRangeHolds(headers['if-range'], v)) return { status: 200 }

  // RFC 9110 §14.1.2: a suffix longer than the representation means all of it (range-parser
  // would drop it as unsatisfiable).
  const suffix = /^bytes=[ \t]*-(\d+)[ \t]*$/.exec(range)?.[1]
  if (suffix !== undefined && v.size > 0 && BigInt(suffix) >= BigInt(v.size)) return { status: 206, start: 0, end: v.size - 1 }
  const ranges = parseRange(v.size, range, { combine: true })
  if (ranges === -1) return { status: 416 }
  if (ranges === -2 || ranges.length !== 1) return { status: 200 }
  const [only] = ranges
  if (only === undefined) return { status: 200 }
  return { status: 206, start: only.start, end: only.end }
}

/**
 * What a GET asks of storage when one read can answer it (no condition to check against the
 * blob's validators first): the whole blob ({}), or one range from a known first byte. Undefined
 * when the blob must be looked up first (conditions, suffix or multiple ranges, malformed Range).
 */
export function askableInOne (headers: RequestHeaders): { start?: number, end?: number } | undefined {
  if (headers['if-none-match'] !== undefined || headers['if-modified-since'] !== undefined || headers['if-range'] !== undefined) return undefined
  const range = rangeOf(headers)
  if (range === undefined) return {}
  const match = /^bytes=[ \t]*(\d+)-(\d*)[ \t]*$/.exec(range)
  if (match === null) return undefined
  const start = Number(match[1])
  const end = match[2] === '' || match[2] === undefined ? undefined : Number(match[2])
  if (!Number.isSafeInteger(start) || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) return undefined
  return { start, ...(end !== undefined && { end }) }
}
