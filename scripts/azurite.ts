// Starts Azurite's blob service as a child process: in memory (or on disk), on a free port, telemetry off,
// with --skipApiVersionCheck (the storage SDK speaks a newer API version than Azurite knows).
// Used by `npm run dev` and by the tests; the caller stops it. Run as a script (`npm run azurite`),
// it keeps one Azurite on port 10000 with its data outside the repository, prints the
// `export AZURE_STORAGE_CONNECTION_STRING=…` line for it, and stops it on Ctrl-C or SIGTERM.

import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

// Azurite's published development account: a well-known key, the same in every Azurite, not a secret.
export const AZURITE_ACCOUNT = 'devstoreaccount1'
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

export interface AzuriteProcess {
  readonly pid: number
  readonly port: number
  /** http://127.0.0.1:PORT/devstoreaccount1 */
  readonly blobEndpoint: string
  readonly connectionString: string
  stop (): Promise<void>
}

export function connectionStringFor (blobEndpoint: string, key = AZURITE_KEY): string {
  return `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${key};BlobEndpoint=${blobEndpoint};`
}

function stopChild (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    child.once('exit', () => { resolve() })
    child.kill('SIGTERM')
    setTimeout(() => child.kill('SIGKILL'), 3000).unref()
  })
}

/** The line that points `publish`, `validate --remote` and `serve` in another terminal at this Azurite. */
export function exportLine (connectionString: string): string {
  return `export AZURE_STORAGE_CONNECTION_STRING='${connectionString}'`
}

/**
 * In memory unless `location` names a directory to keep blobs in (Azurite writes its database
 * and config there, never into the current directory); over HTTPS when given a certificate and
 * key (PEM files), as Azure Storage always is. Port 0 picks a free one.
 */
export async function spawnAzurite (options: { location?: string, port?: number, tls?: { cert: string, key: string } } = {}): Promise<AzuriteProcess> {
  const main = createRequire(import.meta.url).resolve('azurite/dist/src/blob/main.js')
  const persistence = options.location !== undefined ? ['--location', options.location] : ['--inMemoryPersistence']
  const tls = options.tls !== undefined ? ['--cert', options.tls.cert, '--key', options.tls.key] : []
  const child = spawn(process.execPath, [
    main, ...persistence, ...tls, '--blobHost', '127.0.0.1', '--blobPort', String(options.port ?? 0),
    '--skipApiVersionCheck', '--loose', '--disableTelemetry', '--silent'
  ], { stdio: ['ignore', 'pipe', 'pipe'] })

  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => {
      child.kill('SIGKILL') // not left running by a caller that never got its handle
      reject(new Error(`Azurite did not start in 30s: ${out}`))
    }, 30_000)
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      const match = /successfully listens on https?:\/\/[^:]+:(\d+)/.exec(out)
      if (match?.[1] !== undefined) { clearTimeout(timer); resolve(Number(match[1])) }
    })
    child.stderr?.on('data', (chunk: Buffer) => { out += chunk.toString() })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`Azurite exited (${code ?? 'signal'}): ${out}`)) })
  })
  child.stdout?.resume()
  child.stderr?.resume()
  const blobEndpoint = `${options.tls !== undefined ? 'https' : 'http'}://127.0.0.1:${port}/${AZURITE_ACCOUNT}`
  return { pid: child.pid ?? -1, port, blobEndpoint, connectionString: connectionStringFor(blobEndpoint), stop: () => stopChild(child) }
}

/** `npm run azurite`: one Azurite for development, until Ctrl-C or SIGTERM. */
async function runAzurite (): Promise<void> {
  const location = process.env.AZURITE_LOCATION ?? join(tmpdir(), 'pkg-serve-azurite')
  mkdirSync(location, { recursive: true })
  const azurite = await spawnAzurite({ location, port: Number(process.env.AZURITE_PORT ?? '10000') })
  process.stdout.write([
    `Azurite (blob service) on ${azurite.blobEndpoint}, data in ${location} (AZURITE_LOCATION to move it)`,
    'In the terminal where you run pkg-serve (publish, validate --remote, serve), point it here:',
    '',
    `  ${exportLine(azurite.connectionString)}`,
    '',
    '(AccountKey is Azurite\'s well-known development key, the same in every Azurite: not a secret.) Ctrl-C stops Azurite.',
    ''
  ].join('\n'))
  const stop = (): void => { azurite.stop().then(() => { process.stdout.write('Azurite stopped\n') }, () => {}) }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runAzurite().catch((err: unknown) => {
    process.stderr.write(`azurite: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  })
}
