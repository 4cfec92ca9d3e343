// Starts Azurite's blob service as a child process: in memory (or on disk), on a free port, telemetry off.
// Used by `npm run dev` and by the tests; the caller stops it.

import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createRequire } from 'node:module'

// Azurite's published development account: a well-known key, not a secret.
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

/**
 * In memory unless `location` names a directory to keep blobs in (Azurite's own default); over
 * HTTPS when given a certificate and key (PEM files), as Azure Storage always is.
 */
export async function spawnAzurite (options: { location?: string, tls?: { cert: string, key: string } } = {}): Promise<AzuriteProcess> {
  const main = createRequire(import.meta.url).resolve('azurite/dist/src/blob/main.js')
  const persistence = options.location !== undefined ? ['--location', options.location] : ['--inMemoryPersistence']
  const tls = options.tls !== undefined ? ['--cert', options.tls.cert, '--key', options.tls.key] : []
  const child = spawn(process.execPath, [
    main, ...persistence, ...tls, '--blobHost', '127.0.0.1', '--blobPort', '0',
    '--skipApiVersionCheck', '--loose', '--disableTelemetry', '--silent'
  ], { stdio: ['ignore', 'pipe', 'pipe'] })

  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => { reject(new Error(`Azurite did not start in 30s: ${out}`)) }, 30_000)
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
