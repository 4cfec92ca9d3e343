// `pkg-serve run`: the container entrypoint. Wires SIGTERM/SIGINT to the launcher's stop and
// returns the launcher's exit code (the script's on failure, so the kubelet's backoff applies).

import type { RunConfig } from '../config.ts'
import { runLauncher } from '../../launcher/launcher.ts'
import { createLogger } from '../logger.ts'

export async function run (config: RunConfig, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  const logger = createLogger(config.logLevel)
  const stop = new AbortController()
  // `on`, not `once`: a repeated signal (Ctrl-C twice, a supervisor's retry) must not take Node's
  // default action and kill the launcher before it has ended the script's process tree.
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stop.signal.aborted) {
      logger.info({ signal }, `${signal} received again: already stopping`)
      return
    }
    logger.info({ signal }, `${signal} received: stopping`)
    stop.abort()
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  try {
    return await runLauncher(config, { logger, env, stop: stop.signal })
  } finally {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
  }
}
