// `npm run dev`: one command, no Azure account. Starts Azurite (in memory, free port), seeds the
// `pkg` container from examples/ (with a .deb built on the spot), serves with hot reload, and
// prints what to try, including the `export AZURE_STORAGE_CONNECTION_STRING=…` line for publish
// and validate from another terminal. Edits under examples/ are uploaded again as you save them,
// once per change (an editor's save is several file events). Ctrl-C, or SIGTERM to npm, stops
// everything it started; so does the end of the process that started it (npm killed).

import { createHash } from 'node:crypto'
import { watch } from 'node:fs'
import type { FSWatcher } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BlobServiceClient } from '@azure/storage-blob'
import type { ContainerClient } from '@azure/storage-blob'
import { READ_DEFAULTS } from '../src/cli/config.ts'
import { entries, setEntry } from '../src/manifest/edit.ts'
import { parseManifest } from '../src/manifest/parse.ts'
import type { PackageEntry } from '../src/manifest/parse.ts'
import { createLogger } from '../src/cli/logger.ts'
import { errnoCode, messageOf } from '../src/lib/errors.ts'
import { startServer } from '../src/server.ts'
import { openStore } from '../src/storage/open.ts'
import { isStorageError } from '../src/storage/types.ts'
import type { BlobStore } from '../src/storage/types.ts'
import type { RunningServer } from '../src/server.ts'
import { exportLine, spawnAzurite } from './azurite.ts'
import { EXAMPLE_DEB, EXAMPLE_DEB_FILE, buildDeb } from './build-deb.ts'

const EXAMPLES = fileURLToPath(new URL('../examples/', import.meta.url))

/** examples/packages.toml → packages.toml; examples/files/X → X (install-hello.sh under scripts/). */
function blobNameFor (file: string): string | undefined {
  const rel = relative(EXAMPLES, file).split('\\').join('/')
  if (rel === 'packages.toml') return 'packages.toml'
  if (rel === 'files/install-hello.sh') return 'scripts/install-hello.sh'
  if (rel.startsWith('files/') && !rel.endsWith('~')) return rel.slice('files/'.length)
  return undefined
}

/** What was last uploaded from each file (its sha256), so a save that changed nothing uploads nothing. */
const uploaded = new Map<string, string>()

/** A manifest's entries; undefined when it is not a valid manifest. */
const entriesOf = (text: string): Map<string, PackageEntry> | undefined => {
  try {
    return entries(parseManifest(text))
  } catch {
    return undefined
  }
}

/**
 * The manifest in Azurite is examples/packages.toml plus what `publish` added there from another
 * terminal: a save never drops a published entry (the examples' own entries win over one of the
 * same name and tag). Entries are told apart by what this process last wrote from examples/.
 */
const manifest = { examples: undefined as string | undefined, etag: undefined as string | undefined, published: new Map<string, PackageEntry>() }

type TextStore = Pick<BlobStore, 'readText' | 'writeText'>

async function uploadManifest (store: TextStore, text: string): Promise<string[]> {
  for (let attempt = 0; ; attempt++) {
    const read = await store.readText('packages.toml').catch((err: unknown) => {
      if (isStorageError(err) && err.kind === 'not-found') return undefined
      throw err
    })
    const remote = read?.changed === true ? read : undefined
    // Changed by someone else since this process wrote it: what they published is every entry
    // there that examples/ did not name (one they removed is gone from it too).
    const theirs = remote !== undefined && remote.etag !== manifest.etag ? entriesOf(remote.text) : undefined
    if (theirs !== undefined) {
      const ours = entriesOf(manifest.examples ?? '') ?? new Map()
      manifest.published = new Map([...theirs].filter(([k]) => !ours.has(k)))
    }
    // A save that is not a valid manifest goes up as it is (the server keeps the last good one
    // and says why); the published entries come back with the next valid save.
    const examples = entriesOf(text)
    let merged = text
    const kept: string[] = []
    for (const [k, e] of examples === undefined ? [] : manifest.published) {
      if (examples?.has(k) === true) {
        manifest.published.delete(k)
      } else {
        merged = setEntry(merged, e)
        kept.push(`[${e.name}.${e.tag}]`)
      }
    }
    try {
      // Conditional on what was read: a publish in between is read again, not overwritten.
      manifest.etag = await store.writeText('packages.toml', merged, remote?.etag ?? null)
      manifest.examples = text
      return kept
    } catch (err) {
      if (!isStorageError(err) || err.kind !== 'changed' || attempt >= 9) throw err
    }
  }
}

async function uploadFile (container: ContainerClient, store: TextStore, file: string): Promise<string | undefined> {
  const name = blobNameFor(file)
  if (name === undefined) return undefined
  const data = await readFile(file)
  const digest = createHash('sha256').update(data).digest('hex')
  if (uploaded.get(file) === digest) return undefined
  if (name === 'packages.toml') {
    const kept = await uploadManifest(store, data.toString('utf8'))
    uploaded.set(file, digest)
    return kept.length === 0 ? name : `${name}, keeping what publish added: ${kept.join(' ')}`
  }
  await container.getBlockBlobClient(name).uploadData(data)
  uploaded.set(file, digest)
  return name
}

async function main (): Promise<void> {
  const logger = createLogger(process.env.LOG_LEVEL ?? 'info')
  const azurite = await spawnAzurite()
  let server: RunningServer | undefined
  let store: BlobStore | undefined
  let watcher: FSWatcher | undefined
  let stopping = false
  const stop = async (): Promise<void> => {
    if (stopping) return
    stopping = true
    process.stdout.write('\nstopping pkg-serve and Azurite…\n')
    watcher?.close()
    await server?.close()
    await store?.close()
    await azurite.stop()
    process.stdout.write('stopped\n')
  }
  // Ctrl-C reaches every process of the group (npm, the wrapper, this one): handle it each time.
  const onSignal = (): void => { stop().catch((err: unknown) => { process.stderr.write(`dev: ${String(err)}\n`) }) }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  // Whoever started us (npm, the with-ts wrapper) is gone without a signal to us: stop too.
  const parent = process.ppid
  setInterval(() => { if (process.ppid !== parent) onSignal() }, 1000).unref()

  try {
    const env = { ...process.env, AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString }
    const port = Number(process.env.PKG_SERVE_PORT ?? '8080')
    const config = {
      container: 'pkg',
      endpointSuffix: 'core.windows.net',
      azureJson: '/nonexistent/azure.json',
      manifest: 'packages.toml',
      pollInterval: 2,
      storageTimeout: 30,
      ...READ_DEFAULTS,
      host: 'localhost'
    }
    const container = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient('pkg')
    await container.createIfNotExists()
    // The manifest is read and written as publish does: conditional text reads and writes.
    const { store: opened } = await openStore(config, env)
    store = opened
    const upload = (file: string): Promise<string | undefined> => uploadFile(container, opened, file)
    await container.getBlockBlobClient(`pool/${EXAMPLE_DEB_FILE}`).uploadData(buildDeb(EXAMPLE_DEB))
    await upload(join(EXAMPLES, 'files', 'hello.txt'))
    await upload(join(EXAMPLES, 'files', 'install-hello.sh'))
    await upload(join(EXAMPLES, 'packages.toml'))

    try {
      server = await startServer({ ...config, port }, { logger, env, closeGraceMs: 2000 })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err
      server = await startServer({ ...config, port: 0 }, { logger, env, closeGraceMs: 2000 })
    }

    // One save is several events (write, rename, chmod): wait until they settle, then upload once.
    const pending = new Map<string, NodeJS.Timeout>()
    let uploads = Promise.resolve()
    watcher = watch(EXAMPLES, { recursive: true }, (_event, name) => {
      if (name === null || stopping) return
      const file = join(EXAMPLES, name.toString())
      clearTimeout(pending.get(file))
      pending.set(file, setTimeout(() => {
        pending.delete(file)
        // One upload at a time, in the order of the saves: a later save is never overtaken.
        uploads = uploads.then(() => upload(file)).then((blob) => {
          if (blob !== undefined) process.stdout.write(`uploaded examples/${name.toString()} as ${blob}\n`)
        }, (err: unknown) => {
          // Removed (or mid-save): nothing to upload; the next event uploads what is there.
          if (errnoCode(err) !== 'ENOENT') process.stderr.write(`dev: examples/${name.toString()} was not uploaded: ${messageOf(err)}\n`)
        })
      }, 200))
    })

    const url = server.url
    process.stdout.write([
      '',
      `pkg-serve dev: Azurite (pid ${azurite.pid}) on ${azurite.blobEndpoint}, container "pkg" seeded from examples/`,
      `pkg-serve is serving at ${url}`,
      '',
      `  packages:    ${url}/pkg`,
      `  readiness:   ${url}/readyz`,
      `  metrics:     ${url}/metrics`,
      `  try:         curl -fsSOJ ${url}/pkg/pkg-serve-hello/1.0.0 && dpkg-deb --info ${EXAMPLE_DEB_FILE}`,
      '',
      'Edit examples/packages.toml (or add files under examples/files/): saved changes are uploaded and served within 2 s.',
      '',
      'To publish and validate against this Azurite from another terminal (AccountKey is Azurite\'s well-known',
      'development key, the same in every Azurite: not a secret):',
      '',
      `  ${exportLine(azurite.connectionString)}`,
      '  npm run -s pkg-serve -- publish ./my-tool.deb --name my-tool --tag 1.0.0 --sha256',
      '  npm run -s pkg-serve -- validate examples/packages.toml --remote devstoreaccount1',
      '',
      'Ctrl-C stops pkg-serve and Azurite.',
      ''
    ].join('\n'))
  } catch (err) {
    await stop()
    throw err
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`dev: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 1
})
