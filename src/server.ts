// Owns a listening pkg-serve: opens the storage, builds the app with the process logger, binds
// the loopback addresses and closes everything in order. Used by `serve` (and the launcher).

import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { buildApp } from './app.ts'
import { listen } from './http/listen.ts'
import type { Listener } from './http/listen.ts'
import { openStore } from './storage/open.ts'
import type { ServerConfig } from './cli/config.ts'
import { withSharedReads } from './storage/shared-reads.ts'
import { bracketHost } from './lib/net.ts'

export type { ServerConfig }

export interface RunningServer {
  readonly app: FastifyInstance
  readonly port: number
  readonly addresses: readonly string[]
  /** http://localhost:PORT (or the host given). */
  readonly url: string
  close (): Promise<void>
}

export interface ServerDeps {
  readonly logger: FastifyBaseLogger
  readonly env: Readonly<Record<string, string | undefined>>
  readonly closeGraceMs?: number
}

/** Opens the storage and builds a ready app (manifest loaded or retrying), not yet listening. */
export async function openApp (config: ServerConfig, deps: ServerDeps): Promise<FastifyInstance> {
  const MiB = 1024 * 1024
  const { store, description } = await openStore(config, deps.env, {
    connections: config.readConnections,
    chunkBytes: Math.round(config.readChunk * MiB),
    budgetBytes: Math.round(config.readAhead * MiB),
    minSpeedup: config.readMinSpeedup
  })
  deps.logger.info({ storage: description }, `storage: ${description}`)
  const app = await buildApp(
    // Properties reused for up to 1 s, concurrent reads of a small blob shared: see shared-reads.ts.
    { store: withSharedReads(store, { statTtlMs: 1000, coalesceMaxBytes: 256 * 1024 }), manifestPath: config.manifest, pollIntervalSeconds: config.pollInterval },
    { loggerInstance: deps.logger }
  )
  try {
    await app.ready()
  } catch (err) {
    await app.close()
    throw err
  }
  return app
}

/** Binds an app to the configured loopback addresses. */
export function listenApp (app: FastifyInstance, config: Pick<ServerConfig, 'host' | 'port'>, deps: ServerDeps): Promise<Listener> {
  return listen(app.routing, {
    host: config.host,
    port: config.port,
    log: deps.logger,
    ...(deps.closeGraceMs !== undefined && { closeGraceMs: deps.closeGraceMs })
  })
}

export function urlFor (host: string, port: number): string {
  return `http://${bracketHost(host)}:${port}`
}

export async function startServer (config: ServerConfig, deps: ServerDeps): Promise<RunningServer> {
  const app = await openApp(config, deps)
  let listener: Listener
  try {
    listener = await listenApp(app, config, deps)
  } catch (err) {
    await app.close()
    throw err
  }
  let closing: Promise<void> | undefined
  return {
    app,
    port: listener.port,
    addresses: listener.addresses,
    url: urlFor(config.host, listener.port),
    close () {
      closing ??= (async () => {
        await listener.close()
        await app.close()
      })()
      return closing
    }
  }
}
