// `pkg-serve serve`: the package server on its own, until SIGTERM/SIGINT.

import closeWithGrace from 'close-with-grace'
import type { ServeConfig } from '../config.ts'
import { createLogger } from '../logger.ts'
import { startServer } from '../../server.ts'

export async function serve (config: ServeConfig, env: Readonly<Record<string, string | undefined>>): Promise<void> {
  const logger = createLogger(config.logLevel)
  const server = await startServer(config, { logger, env })
  logger.info({ url: server.url }, `pkg-serve ready to serve at ${server.url}/pkg (readiness: ${server.url}/readyz)`)
  closeWithGrace({ delay: 15_000, logger }, async ({ signal, err }) => {
    if (err !== undefined) logger.error({ err }, 'closing after an unexpected error')
    else logger.info({ signal }, `${signal ?? 'close'} received: closing`)
    await server.close()
  })
}
