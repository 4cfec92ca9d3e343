// `pkg-serve serve`: the package server on its own, until SIGTERM/SIGINT. Its start-up line says
// "ready" only when /readyz would say so.

import closeWithGrace from 'close-with-grace'
import type { ServeConfig } from '../config.ts'
import { createLogger } from '../logger.ts'
import { startServer } from '../../server.ts'

export async function serve (config: ServeConfig, env: Readonly<Record<string, string | undefined>>): Promise<void> {
  const logger = createLogger(config.logLevel)
  const server = await startServer(config, { logger, env })
  const status = server.app.manifests.status()
  if (status.ready) {
    logger.info({ url: server.url, ready: true }, `pkg-serve ready to serve at ${server.url}/pkg (readiness: ${server.url}/readyz)`)
  } else {
    // Storage is slow or the manifest is missing or rejected: the cache keeps trying on its own.
    logger.warn({ url: server.url, ready: false, lastError: status.lastError?.message ?? null },
      `pkg-serve listening at ${server.url}/pkg but not ready: no manifest loaded yet (${status.lastError?.message ?? 'still reading it'}); ` +
      `${server.url}/readyz says 503 until one loads`)
  }
  closeWithGrace({ delay: 15_000, logger }, async ({ signal, err }) => {
    if (err !== undefined) logger.error({ err }, 'closing after an unexpected error')
    else logger.info({ signal }, `${signal ?? 'close'} received: closing`)
    await server.close()
  })
}
