// `pkg-serve run`: the container entrypoint. Wires SIGTERM/SIGINT to the launcher's stop and
// returns the launcher's exit code (the script's on failure, so the kubelet's backoff applies).

import type { RunConfig } from '../config.ts'
import { runLauncher } from '../launcher/launcher.ts'
import { createLogger } from '../logger.ts'

export async function run (config: RunConfig, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  const logger = createLogger(config.logLevel)
  const stop = new AbortController()
  const onSignal = (signal: NodeJS.Signals): void => {
    logger.info({ signal }, `${signal} received: stopping`)
    stop.abort()
  }
  process.once('SIGTERM', onSignal)
  process.once('SIGINT', onSignal)
  try {
    return await runLauncher(config, { logger, env, stop: stop.signal })
  } finally {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
  }
}
