// Builds a small, real Debian package (ar archive of debian-binary, control.tar.gz and
// data.tar.gz) from files in memory, so the examples need no binary in git and no dpkg-deb on
// the developer's machine. `node scripts/build-deb.ts OUT_DIR` writes the example package.

import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { gzipSync } from 'node:zlib'

export interface DebFile {
  /** Path inside the package, without the leading "./", e.g. usr/share/doc/x/README. */
  readonly path: string
  readonly content: string | Buffer
  readonly mode?: number
}

export interface DebSpec {
  readonly name: string
  readonly version: string
  readonly architecture?: string
  readonly maintainer?: string
  readonly description: string
  readonly files: readonly DebFile[]
  /** Maintainer scripts (postinst, …), placed in control.tar.gz with mode 0755. */
  readonly scripts?: Readonly<Record<string, string>>
}

const MTIME = 1_700_000_000 // fixed, so the same spec builds the same bytes

function octal (value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`
}

function tarHeader (name: string, size: number, mode: number, type: '0' | '5'): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`tar name too long: ${name}`)
  const h = Buffer.alloc(512)
  h.write(name, 0, 100)
  h.write(octal(mode, 8), 100)
  h.write(octal(0, 8), 108)
  h.write(octal(0, 8), 116)
  h.write(octal(size, 12), 124)
  h.write(octal(MTIME, 12), 136)
  h.write('        ', 148)
  h.write(type, 156)
  h.write('ustar\0', 257)
  h.write('00', 263)
  h.write('root', 265)
  h.write('root', 297)
  let sum = 0
  for (const byte of h) sum += byte
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148)
  return h
}

/** A tar archive of `./`-rooted entries, directories first. */
export function tar (files: ReadonlyArray<{ path: string, content: Buffer, mode: number }>): Buffer {
  const parts: Buffer[] = [tarHeader('./', 0, 0o755, '5')]
  const dirs = new Set<string>()
  for (const f of files) {
    const segments = f.path.split('/')
    for (let i = 1; i < segments.length; i++) dirs.add(`${segments.slice(0, i).join('/')}/`)
  }
  for (const d of [...dirs].sort()) parts.push(tarHeader(`./${d}`, 0, 0o755, '5'))
  for (const f of files) {
    parts.push(tarHeader(`./${f.path}`, f.content.length, f.mode, '0'), f.content, Buffer.alloc((512 - (f.content.length % 512)) % 512))
  }
  parts.push(Buffer.alloc(1024))
  return Buffer.concat(parts)
}

function arMember (name: string, data: Buffer): Buffer {
  const header = `${name.padEnd(16)}${String(MTIME).padEnd(12)}${'0'.padEnd(6)}${'0'.padEnd(6)}${'100644'.padEnd(8)}${String(data.length).padEnd(10)}\`\n`
  return Buffer.concat([Buffer.from(header, 'ascii'), data, data.length % 2 === 1 ? Buffer.from('\n') : Buffer.alloc(0)])
}

export function buildDeb (spec: DebSpec): Buffer {
  const files = spec.files.map((f) => ({ path: f.path, content: Buffer.from(f.content), mode: f.mode ?? 0o644 }))
  const installedKiB = Math.ceil(files.reduce((n, f) => n + f.content.length, 0) / 1024)
  const control = [
    `Package: ${spec.name}`,
    `Version: ${spec.version}`,
    `Architecture: ${spec.architecture ?? 'all'}`,
    `Maintainer: ${spec.maintainer ?? 'pkg-serve examples <examples@pkg-serve.invalid>'}`,
    `Installed-Size: ${installedKiB}`,
    'Section: misc',
    'Priority: optional',
    `Description: ${spec.description}`,
    ''
  ].join('\n')
  const controlFiles = [
    { path: 'control', content: Buffer.from(control), mode: 0o644 },
    ...Object.entries(spec.scripts ?? {}).map(([name, body]) => ({ path: name, content: Buffer.from(body), mode: 0o755 }))
  ]
  return Buffer.concat([
    Buffer.from('!<arch>\n'),
    arMember('debian-binary', Buffer.from('2.0\n')),
    arMember('control.tar.gz', gzipSync(tar(controlFiles))),
    arMember('data.tar.gz', gzipSync(tar(files)))
  ])
}

/** The example package of `npm run dev` and the deploy example. */
export const EXAMPLE_DEB: DebSpec = {
  name: 'pkg-serve-hello',
  version: '1.0.0',
  description: 'Example package served by pkg-serve\n It installs one text file, to show a node script installing a private package.',
  files: [
    { path: 'usr/share/pkg-serve-hello/hello.txt', content: 'Hello from a package served by pkg-serve.\n' },
    { path: 'usr/share/doc/pkg-serve-hello/README', content: 'Built by scripts/build-deb.ts; not a binary in git.\n' }
  ]
}

export const EXAMPLE_DEB_FILE = `${EXAMPLE_DEB.name}_${EXAMPLE_DEB.version}_all.deb`

export async function writeExampleDeb (dir: string): Promise<string> {
  await mkdir(dir, { recursive: true })
  const path = join(dir, EXAMPLE_DEB_FILE)
  await writeFile(path, buildDeb(EXAMPLE_DEB))
  return path
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  writeExampleDeb(process.argv[2] ?? '.').then((p) => { process.stdout.write(`${p}\n`) }, (err: unknown) => {
    process.stderr.write(`build-deb: ${String(err)}\n`)
    process.exitCode = 1
  })
}
