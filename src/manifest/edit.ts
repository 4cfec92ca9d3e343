// Adds or replaces one [name.tag] entry in manifest text, for `publish`. It edits the text so
// the rest of the manifest — other entries, comments, order — is kept as the author wrote it,
// and it checks its own result: every other entry must parse exactly as before.

import { isDeepStrictEqual } from 'node:util'
import { ManifestError, parseManifest, tableName } from './parse.ts'
import type { Manifest, PackageEntry } from './parse.ts'
import { parseToml } from './toml.ts'

function tomlString (value: string): string {
  // A literal string when it can be one (no quote, no control characters), else a basic string.
  // eslint-disable-next-line no-control-regex
  return !/['\u0000-\u001f\u007f]/.test(value) ? `'${value}'` : JSON.stringify(value)
}

export function renderEntry (entry: PackageEntry): string {
  const lines = [tableName(entry.name, entry.tag), `path = ${tomlString(entry.path)}`]
  if (entry.sha256 !== undefined) lines.push(`sha256 = ${tomlString(entry.sha256)}`)
  if (entry.contentType !== undefined) lines.push(`content_type = ${tomlString(entry.contentType)}`)
  if (entry.filename !== undefined) lines.push(`filename = ${tomlString(entry.filename)}`)
  return `${lines.join('\n')}\n`
}

/** The key path a `[table.header]` line names, or undefined when the line is no table header. */
function headerPath (line: string): string[] | undefined {
  if (!/^\s*\[(?!\[)/.test(line)) return undefined
  try {
    // A header line is a TOML document of its own: let the parser read its quoting and comment.
    let node: unknown = parseToml(`${line}\n`)
    const path: string[] = []
    while (typeof node === 'object' && node !== null) {
      const entries = Object.entries(node)
      const [only] = entries
      if (entries.length !== 1 || only === undefined) break
      path.push(only[0])
      node = only[1]
    }
    return path
  } catch {
    return undefined
  }
}

/** A manifest's entries by name and tag. */
export function entries (m: Manifest): Map<string, PackageEntry> {
  const out = new Map<string, PackageEntry>()
  for (const tags of m.packages.values()) for (const e of tags.values()) out.set(`${e.name}\u0000${e.tag}`, e)
  return out
}

/** Returns the manifest text with [entry.name.entry.tag] set; throws ManifestError if `text` is invalid. */
export function setEntry (text: string, entry: PackageEntry, source = 'packages.toml'): string {
  const before = parseManifest(text, source)
  const block = renderEntry(entry)
  const lines = text.split('\n')
  const start = lines.findIndex((line) => {
    const path = headerPath(line)
    return path !== undefined && path.length === 2 && path[0] === entry.name && path[1] === entry.tag
  })

  let result: string
  if (start >= 0) {
    let end = start + 1
    while (end < lines.length && !/^\s*\[/.test(lines[end] ?? '')) end++
    // Keep the blank lines and comments that end the old block (they belong to what follows).
    let keep = end
    while (keep > start + 1 && /^\s*(#.*)?$/.test(lines[keep - 1] ?? '')) keep--
    result = [...lines.slice(0, start), ...block.trimEnd().split('\n'), ...lines.slice(keep)].join('\n')
  } else if (before.packages.get(entry.name)?.has(entry.tag) === true) {
    throw new ManifestError(source, [{
      table: tableName(entry.name, entry.tag),
      message: 'is defined in a form publish cannot edit (an inline or dotted table): rewrite it as a [name.tag] table'
    }])
  } else {
    const trimmed = text.replace(/\s*$/, '')
    result = trimmed === '' ? block : `${trimmed}\n\n${block}`
  }

  // Check the edit: the entry is as asked and nothing else moved.
  const after = entries(parseManifest(result, source))
  const expected = entries(before)
  expected.set(`${entry.name}\u0000${entry.tag}`, entry)
  if (!isDeepStrictEqual(after, expected)) {
    throw new ManifestError(source, [{ table: tableName(entry.name, entry.tag), message: 'editing the manifest would change other entries; edit it by hand' }])
  }
  return result
}
