// TOML parsing for the manifest, safe for any key. @iarna/toml (the stack's TOML library) stores
// keys on plain objects and looks them up with `obj[key] || new table`, so a table named after an
// Object.prototype member (`[app.toString]`, `[hasOwnProperty.x]`) is silently lost or rejected,
// and its values land on the shared Object.prototype.toString function. Here every key is
// prefixed while the library parses (no prefixed key is a prototype member), and the result is
// rebuilt with the real keys on null-prototype objects. Nothing here may ever return or touch an
// object that inherits from Object.prototype by a key taken from the text.

import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

interface ParserState { returned: unknown }
interface TomlParser {
  parse (text: string): void
  finish (): unknown
  callNow (fn: (this: TomlParser) => unknown, returnWith: (this: TomlParser, value: unknown) => unknown): unknown
  returnNow (value: unknown): unknown
  parseKeyword (): unknown
  state: ParserState
}
type TomlParserClass = new () => TomlParser

// The library's parser has no types: these two describe what this module uses of it.
/* eslint-disable @typescript-eslint/no-unsafe-type-assertion */
const BaseParser = require('@iarna/toml/lib/toml-parser.js') as TomlParserClass
const prettyError = require('@iarna/toml/parse-pretty-error.js') as (err: unknown, text: string) => Error
/* eslint-enable @typescript-eslint/no-unsafe-type-assertion */

const PREFIX = 'k:'

class PrefixingParser extends BaseParser {
  override parseKeyword (): unknown {
    // Parse the key with the library's own rules (bare, quoted, literal), then hand it back prefixed.
    return this.callNow(BaseParser.prototype.parseKeyword, function (this: TomlParser, key: unknown) {
      return this.returnNow(`${PREFIX}${String(key)}`)
    })
  }
}

/** A TOML table: a null-prototype object whose keys are exactly the document's. */
export type TomlTable = { [key: string]: TomlValue }
export type TomlValue = string | number | boolean | Date | TomlValue[] | TomlTable

function unprefix (value: unknown): TomlValue {
  if (Array.isArray(value)) return value.map(unprefix)
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' || value instanceof Date) return value
  if (typeof value !== 'object' || value === null) throw new TypeError(`the TOML parser gave a ${typeof value}`)
  const table: TomlTable = Object.create(null)
  for (const [key, inner] of Object.entries(value)) {
    // Own keys only: everything the parser stored carries the prefix.
    if (!key.startsWith(PREFIX)) continue
    table[key.slice(PREFIX.length)] = unprefix(inner)
  }
  return table
}

/** Parses TOML text; throws the library's error (with line, col and pos) on a syntax error. */
export function parseToml (text: string): TomlTable {
  const parser = new PrefixingParser()
  try {
    parser.parse(text)
    const document = unprefix(parser.finish())
    if (typeof document !== 'object' || Array.isArray(document) || document instanceof Date) throw new TypeError('the TOML parser gave no table')
    return document
  } catch (err) {
    throw prettyError(err, text)
  }
}
