// The `packages.toml` manifest: parse, validate and index it.
// Shared by the server's manifest cache and `pkg-serve validate`, so both apply the same rules.
// It must never return a manifest that names a path outside the container, and never store
// untrusted names as plain-object keys (`__proto__` is a valid package name): lookups use Maps,
// and the TOML parser (toml.ts) hands over null-prototype tables. The server reads the manifest
// as text decoded with U+FFFD in place of bytes that are not UTF-8, and `validate` decodes the
// file strictly first: both then refuse U+FFFD here, so they accept exactly the same files.

import { z } from 'zod'
import { parseToml as parseTomlText } from './toml.ts'
import type { TomlTable } from './toml.ts'
import { UserError } from '../lib/errors.ts'
import { MAX_TEXT_BYTES } from '../storage/types.ts'

export const NAME_PATTERN = /^[A-Za-z0-9._-]{1,128}$/

const blobPath = z
  .string()
  .min(1, 'must not be empty')
  .max(1024, 'must be at most 1024 characters')
  .refine((p) => !p.startsWith('/'), 'must be relative (no leading "/")')
  .refine((p) => !p.includes('\\'), 'must not contain "\\"')
  .refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), 'must not contain "." or ".." segments')
  .refine((p) => !p.split('/').some((s) => s === ''), 'must not contain empty segments ("//" or a trailing "/")')
  // eslint-disable-next-line no-control-regex
  .refine((p) => !/[\u0000-\u001f\u007f]/.test(p), 'must not contain control characters')

export const entrySchema = z.strictObject({
  path: blobPath,
  sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hexadecimal characters').optional(),
  content_type: z
    .string()
    .regex(/^[A-Za-z0-9!#$&^_.+-]{1,127}\/[A-Za-z0-9!#$&^_.+-]{1,127}(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=("[^"\r\n]*"|[A-Za-z0-9!#$&^_.+-]+))*$/,
      'must be a media type such as application/vnd.debian.binary-package')
    .optional(),
  filename: z
    .string()
    .min(1, 'must not be empty')
    .max(255, 'must be at most 255 characters')
    // eslint-disable-next-line no-control-regex
    .refine((f) => !/[\u0000-\u001f\u007f/\\]/.test(f), 'must not contain "/", "\\" or control characters')
    .optional()
})

export type EntryInput = z.infer<typeof entrySchema>

export interface PackageEntry {
  readonly name: string
  readonly tag: string
  readonly path: string
  readonly sha256?: string
  readonly contentType?: string
  readonly filename?: string
}

export interface Manifest {
  readonly packages: ReadonlyMap<string, ReadonlyMap<string, PackageEntry>>
  readonly entryCount: number
}

export interface ManifestIssue {
  /** `[name.tag]` or `name`, when the issue belongs to a table. */
  readonly table?: string
  readonly key?: string
  readonly line?: number
  readonly column?: number
  readonly message: string
}

export class ManifestError extends UserError {
  readonly issues: readonly ManifestIssue[]
  readonly source: string

  constructor (source: string, issues: readonly ManifestIssue[]) {
    super(`${source}: ${issues.map(formatIssue).join('; ')}`)
    this.name = 'ManifestError'
    this.source = source
    this.issues = issues
  }
}

export function formatIssue (issue: ManifestIssue): string {
  const where: string[] = []
  if (issue.line !== undefined) where.push(`line ${issue.line}, column ${issue.column ?? 0}`)
  if (issue.table !== undefined) where.push(issue.table)
  if (issue.key !== undefined) where.push(`key "${issue.key}"`)
  return where.length > 0 ? `${where.join(' ')}: ${issue.message}` : issue.message
}

export function tableName (name: string, tag?: string): string {
  const quote = (s: string): string => /^[A-Za-z0-9_-]+$/.test(s) ? s : `'${s}'`
  return tag === undefined ? `[${quote(name)}]` : `[${quote(name)}.${quote(tag)}]`
}

function isTable (value: unknown): value is TomlTable {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date)
}

interface TomlSyntaxError extends Error { line?: number, col?: number }

/** The UTF-8 byte order mark, which some Windows editors put at the start of a file. */
const BOM = '\uFEFF'

/** Refuses what no manifest may be, before TOML: too large, a BOM, bytes that were not UTF-8. */
function checkText (text: string, source: string): void {
  const bytes = Buffer.byteLength(text)
  if (bytes > MAX_TEXT_BYTES) {
    throw new ManifestError(source, [{ message: `is ${bytes} bytes; a manifest may be at most ${MAX_TEXT_BYTES} bytes (4 MiB)` }])
  }
  if (text.startsWith(BOM)) {
    throw new ManifestError(source, [{
      line: 1,
      column: 1,
      message: 'starts with a byte order mark (BOM: the invisible bytes EF BB BF some Windows editors put first): save the file as UTF-8 without BOM'
    }])
  }
  const bad = text.indexOf('\uFFFD')
  if (bad >= 0) {
    const before = text.slice(0, bad).split('\n')
    throw new ManifestError(source, [{
      line: before.length,
      column: (before.at(-1)?.length ?? 0) + 1,
      message: 'is not valid UTF-8 (bytes that are not UTF-8, or the U+FFFD replacement character left where such bytes were): save the file as UTF-8'
    }])
  }
}

/**
 * Decodes a manifest file's bytes the way the server reads the blob, but strictly: the size limit
 * first, then UTF-8, naming the first byte that is not UTF-8. Throws ManifestError.
 */
export function decodeManifest (bytes: Uint8Array, source = 'packages.toml'): string {
  if (bytes.length > MAX_TEXT_BYTES) {
    throw new ManifestError(source, [{ message: `is ${bytes.length} bytes; a manifest may be at most ${MAX_TEXT_BYTES} bytes (4 MiB)` }])
  }
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes)
  } catch {
    // Find the first bad byte for the message: the longest prefix that decodes.
    let good = 0
    let bad = bytes.length
    while (bad - good > 1) {
      const mid = (good + bad) >> 1
      try {
        new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(0, mid), { stream: true })
        good = mid
      } catch {
        bad = mid
      }
    }
    const text = Buffer.from(bytes.subarray(0, good)).toString('utf8').split('\n')
    throw new ManifestError(source, [{
      line: text.length,
      column: (text.at(-1)?.length ?? 0) + 1,
      message: `is not valid UTF-8 (byte ${good} is 0x${(bytes[good] ?? 0).toString(16).padStart(2, '0')}): save the file as UTF-8`
    }])
  }
}

function parseToml (text: string, source: string): TomlTable {
  checkText(text, source)
  try {
    return parseTomlText(text)
  } catch (err) {
    const e: TomlSyntaxError = err instanceof Error ? err : new Error(String(err))
    // @iarna/toml reports 0-based positions and repeats them, with a snippet, in its message.
    const reason = (e.message ?? String(err)).split('\n')[0]?.replace(/ at row \d+, col \d+, pos \d+:?$/, '') ?? 'invalid TOML'
    throw new ManifestError(source, [{
      line: typeof e.line === 'number' ? e.line + 1 : undefined,
      column: typeof e.col === 'number' ? e.col + 1 : undefined,
      message: `TOML syntax error: ${reason}`
    }])
  }
}

/** Parses and validates manifest text; throws ManifestError listing every problem found. */
export function parseManifest (text: string, source = 'packages.toml'): Manifest {
  const doc = parseToml(text, source)
  const issues: ManifestIssue[] = []
  const packages = new Map<string, Map<string, PackageEntry>>()
  let entryCount = 0

  for (const [name, tags] of Object.entries(doc)) {
    if (!NAME_PATTERN.test(name)) {
      issues.push({ table: tableName(name), message: 'package name must match [A-Za-z0-9._-]{1,128}' })
      continue
    }
    if (!isTable(tags)) {
      issues.push({ key: name, message: `expected a table of tags such as [${name}.latest], found a ${describe(tags)}` })
      continue
    }
    const byTag = new Map<string, PackageEntry>()
    for (const [tag, raw] of Object.entries(tags)) {
      const table = tableName(name, tag)
      if (!NAME_PATTERN.test(tag)) {
        issues.push({ table, message: 'tag must match [A-Za-z0-9._-]{1,128}' })
        continue
      }
      if (!isTable(raw)) {
        issues.push({ table: tableName(name), key: tag, message: `expected a table with "path", found a ${describe(raw)}` })
        continue
      }
      const dotted = dottedTags(raw)
      if (dotted !== undefined) {
        // [app.1.0] is package app, tag 1, table 0: the author meant the tag '1.0'.
        for (const chain of dotted) {
          const meant = [tag, ...chain].join('.')
          issues.push({
            table: `[${name}.${meant}]`,
            message: `is read as package "${name}", tag "${tag}" and ${chain.length === 1 ? 'a table' : 'tables'} ${chain.map((k) => `"${k}"`).join(', ')} inside it: ` +
              `a tag with dots must be quoted, ${tableName(name, meant)}`
          })
        }
        continue
      }
      const parsed = entrySchema.safeParse(raw)
      if (!parsed.success) {
        for (const issue of parsed.error.issues) issues.push(...fromZodIssue(table, issue, raw))
        continue
      }
      const { path, sha256, content_type: contentType, filename } = parsed.data
      byTag.set(tag, {
        name,
        tag,
        path,
        ...(sha256 !== undefined && { sha256: sha256.toLowerCase() }),
        ...(contentType !== undefined && { contentType }),
        ...(filename !== undefined && { filename })
      })
      entryCount++
    }
    packages.set(name, byTag)
  }

  if (issues.length > 0) throw new ManifestError(source, issues)
  return { packages, entryCount }
}

/**
 * For a "tag" table that holds only tables which end in entries (`[app.1.0]` and `[app.1.1]`
 * make tag "1" hold tables "0" and "1"), the nested key chains: the dotted tags meant.
 */
function dottedTags (raw: TomlTable): string[][] | undefined {
  if (Object.hasOwn(raw, 'path')) return undefined
  const chains: string[][] = []
  for (const [key, value] of Object.entries(raw)) {
    if (!isTable(value)) return undefined
    if (Object.hasOwn(value, 'path')) {
      chains.push([key])
      continue
    }
    const deeper = dottedTags(value)
    if (deeper === undefined) return undefined
    for (const chain of deeper) chains.push([key, ...chain])
  }
  return chains.length > 0 ? chains : undefined
}

function fromZodIssue (table: string, issue: z.core.$ZodIssue, raw: TomlTable): ManifestIssue[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ table, key, message: 'unknown key (allowed: path, sha256, content_type, filename)' }))
  }
  const key = issue.path.map(String).join('.') || undefined
  if (issue.code === 'invalid_type') {
    const value = key === undefined ? raw : raw[key]
    if (value === undefined) return [{ table, key, message: 'is required' }]
    return [{ table, key, message: `expected a ${issue.expected}, found a ${describe(value)}` }]
  }
  return [{ table, key, message: issue.message }]
}

function describe (value: unknown): string {
  if (value instanceof Date) return 'date'
  if (Array.isArray(value)) return 'array'
  if (value === null) return 'null'
  if (isTable(value)) return 'table'
  return typeof value
}
