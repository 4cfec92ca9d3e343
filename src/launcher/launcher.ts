// The DaemonSet entrypoint's life: copy the action to the host, open the package server on a
// free loopback port, run the action on the node through nsenter, report (log, status.json,
// ready file), close the port, then idle — or retry, or rerun when the ConfigMap changes.
// It must never leave the script's processes behind on a stop, never pass its own environment
// (credentials) to the script, and never keep the port open after success unless asked to.

import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { Listener } from '../http/listen.ts'
import { listenApp, openApp, urlFor } from '../server.ts'
import type { LauncherConfig } from '../cli/config.ts'
import { installAction, listActions, readAction } from './actions.ts'
import type { ActionScript } from './actions.ts'
import { buildCommand } from './nsenter.ts'
import { runScript } from './supervise.ts'
import type { ScriptResult } from './supervise.ts'
import { createOnceRecords, createStateDir, runKey } from './state.ts'
import type { Status } from './state.ts'
import { withoutQuery } from '../lib/net.ts'

export interface LauncherDeps {
  readonly logger: FastifyBaseLogger
  readonly env: Readonly<Record<string, string | undefined>>
  /** Aborted on SIGTERM/SIGINT. */
  readonly stop: AbortSignal
}

/** PATH for the script on the node; nothing else of this container's environment is passed. */
const NODE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15, SIGABRT: 6, SIGSEGV: 11, SIGPIPE: 13 }

export function exitCodeOf (result: Pick<ScriptResult, 'exitCode' | 'signal'>): number {
  if (result.exitCode !== null) return result.exitCode
  return 128 + (result.signal !== null ? SIGNAL_NUMBERS[result.signal] ?? 1 : 1)
}

/** Resolves when any signal aborts, or after ms (undefined: never); says which. */
function waitFor (signals: readonly AbortSignal[], ms?: number): Promise<'timeout' | AbortSignal> {
  return new Promise((resolve) => {
    const already = signals.find((s) => s.aborted)
    if (already !== undefined) { resolve(already); return }
    // A ref'd timer: an idle launcher must stay alive until it is told to stop.
    const timer = ms === undefined ? setInterval(() => {}, 1 << 30) : setTimeout(() => { done('timeout') }, ms)
    const listeners = signals.map((s) => {
      const listener = (): void => { done(s) }
      s.addEventListener('abort', listener, { once: true })
      return [s, listener] as const
    })
    function done (why: 'timeout' | AbortSignal): void {
      clearTimeout(timer)
      clearInterval(timer)
      for (const [s, l] of listeners) s.removeEventListener('abort', l)
      resolve(why)
    }
  })
}

export async function runLauncher (config: LauncherConfig, deps: LauncherDeps): Promise<number> {
  const log = deps.logger.child({ action: config.action })
  const state = createStateDir(config.stateDir)
  const once = createOnceRecords(config.hostDir)
  const args = [...config.scriptArgs]
  const { stop } = deps

  let status: Omit<Status, 'updatedAt'> = { phase: 'starting', action: config.action, args, attempts: 0 }
  const update = async (patch: Partial<Omit<Status, 'updatedAt'>>): Promise<void> => {
    status = { ...status, ...patch }
    await state.write(status)
  }
  await state.init()
  await state.heartbeat()
  const heartbeat = setInterval(() => { state.heartbeat().catch(() => {}) }, 10_000)
  heartbeat.unref()
  let script: ActionScript = await readAction(config.actionsDir, config.action)
  await update({ scriptSha256: script.sha256 })

  // --watch: a changed script aborts `changed`, which interrupts a run, a retry wait or the idle.
  let changed = new AbortController()
  let watcher: NodeJS.Timeout | undefined
  if (config.watch) {
    let checking = false
    watcher = setInterval(() => {
      if (checking) return
      checking = true
      readAction(config.actionsDir, config.action).then((next) => {
        if (next.sha256 !== script.sha256 && !changed.signal.aborted) {
          log.info({ sha256: next.sha256 }, `action ${config.action} changed in ${config.actionsDir}: running the new version`)
          changed.abort()
        }
      }, () => { /* mid-swap or removed: look again next time */ }).finally(() => { checking = false })
    }, config.watchInterval * 1000)
    watcher.unref()
  }

  let app: FastifyInstance | undefined
  let listener: Listener | undefined
  const serverDeps = { logger: deps.logger, env: deps.env, closeGraceMs: 2000 }
  const closeListener = async (): Promise<void> => {
    const l = listener
    listener = undefined
    if (l !== undefined) {
      await l.close()
      log.info({ port: l.port }, `package server closed port ${l.port}`)
    }
  }

  async function waitForManifest (server: FastifyInstance): Promise<void> {
    const deadline = Date.now() + config.readyTimeout * 1000
    while (server.manifests.manifest === undefined && Date.now() < deadline && !stop.aborted) {
      await waitFor([stop], 100)
    }
    if (server.manifests.manifest === undefined && !stop.aborted) {
      const why = server.manifests.status().lastError?.message ?? 'not loaded yet'
      log.warn({ reason: why }, `no package manifest after ${config.readyTimeout}s (${why}); running the action anyway: its downloads will fail with 503 until storage answers`)
    }
  }

  async function runOnce (): Promise<ScriptResult | 'skipped'> {
    const key = runKey(script.sha256, args)
    if (config.once && !config.force) {
      const earlier = await once.succeeded(config.action, key)
      if (earlier !== undefined) {
        log.info({ at: earlier.at }, `action ${config.action} already succeeded on this node with this content and these args (${earlier.at}): skipping (--force runs it again)`)
        return 'skipped'
      }
    }
    // Every action goes to the host (a script may source a helper from the same ConfigMap); the
    // one to run is copied from the bytes already read, so it is exactly what the record names.
    for (const other of await listActions(config.actionsDir)) {
      if (other !== config.action) await installAction(config.hostDir, await readAction(config.actionsDir, other))
    }
    await installAction(config.hostDir, script)
    app ??= await openApp(config, serverDeps)
    await closeListener()
    listener = await listenApp(app, config, serverDeps)
    const port = listener.port
    await waitForManifest(app)
    // Stopped, or the action changed, while waiting: do not start what would be killed at once.
    if (stop.aborted || changed.signal.aborted) return { exitCode: null, signal: null, durationMs: 0, stopped: true }

    const command = buildCommand({ ...config, args })
    const env = {
      PATH: NODE_PATH,
      HOME: '/root',
      PKG_SERVE_RUN_PORT: String(port),
      PKG_SERVE_RUN_URL: urlFor(config.host, port),
      PKG_SERVE_STORAGE: withoutQuery(config.storage ?? '')
    }
    const startedAt = new Date()
    await update({ phase: 'running', attempts: status.attempts + 1, port, startedAt: startedAt.toISOString(), finishedAt: null, durationMs: null, exitCode: null, signal: null, nextAttemptAt: null })
    log.info({ argv: [command.file, ...command.args], port }, `running action ${config.action} (attempt ${status.attempts}) with PKG_SERVE_RUN_PORT=${port}`)

    const running = runScript(command.file, command.args, env, {
      line: (stream, text) => { log.info({ stream }, text) }
    })
    const finished = new AbortController()
    running.done.then(() => { finished.abort() })
    const why = await waitFor([finished.signal, stop, changed.signal])
    const result = why === finished.signal ? await running.done : await running.stop(config.killGrace * 1000)
    const seconds = (result.durationMs / 1000).toFixed(2)
    const how = result.stopped
      ? `stopped (${stop.aborted ? 'pkg-serve is stopping' : 'the action changed'})`
      : result.exitCode !== null ? `exited with code ${result.exitCode}` : `was killed by ${result.signal ?? 'a signal'}`
    log[result.exitCode === 0 && !result.stopped ? 'info' : 'warn'](
      { exitCode: result.exitCode, signal: result.signal, durationMs: result.durationMs },
      `action ${config.action} ${how} after ${seconds}s`
    )
    await update({ exitCode: result.exitCode, signal: result.signal, finishedAt: new Date().toISOString(), durationMs: result.durationMs })
    return result
  }

  try {
    for (;;) {
      await state.setReady(false)
      const result = await runOnce()
      const succeeded = result === 'skipped' || (result.exitCode === 0 && !result.stopped)
      app?.metrics.scriptRuns.inc({ result: result === 'skipped' ? 'skipped' : result.stopped ? 'stopped' : succeeded ? 'succeeded' : 'failed' })
      if (!(succeeded && config.keepServing)) await closeListener()

      if (result !== 'skipped' && result.stopped) {
        if (stop.aborted) {
          await update({ phase: 'stopped' })
          return 128 + 15
        }
      } else if (succeeded) {
        if (result !== 'skipped') await once.record(config.action, runKey(script.sha256, args), args)
        await update({ phase: result === 'skipped' ? 'skipped' : 'succeeded' })
        await state.setReady(true)
        if (config.exitOnSuccess) return 0
        if (!config.keepServing && !config.watch && app !== undefined) {
          await app.close()
          app = undefined
        }
        log.info(listener !== undefined
          ? `done: still serving on port ${listener.port} (--keep-serving) until SIGTERM`
          : `done: idle until SIGTERM${config.watch ? ' or a change of the action' : ''}`)
        if (await waitFor([stop, changed.signal]) === stop) {
          await update({ phase: 'stopped' })
          return 0
        }
      } else {
        const code = exitCodeOf(result)
        if (config.onFailure === 'exit') {
          await update({ phase: 'failed', message: `exit code ${code}` })
          return code
        }
        const delayS = Math.min(config.retryMaxDelay, config.retryDelay * 2 ** Math.max(0, status.attempts - 1))
        await update({ phase: 'retrying', nextAttemptAt: new Date(Date.now() + delayS * 1000).toISOString(), message: `exit code ${code}` })
        log.warn({ delaySeconds: delayS }, `retrying action ${config.action} in ${delayS}s (--on-failure retry)`)
        if (await waitFor([stop, changed.signal], delayS * 1000) === stop) {
          // Stopped before the script ever succeeded: not a clean exit.
          await update({ phase: 'stopped' })
          return 128 + 15
        }
      }

      if (changed.signal.aborted) {
        // Run the new content from a clean slate.
        // Read first, then swap script and signal together: a watcher check that finishes in
        // between must compare against the new script, not abort the new run.
        const next = await readAction(config.actionsDir, config.action)
        script = next
        changed = new AbortController()
        await update({ scriptSha256: script.sha256, attempts: 0, phase: 'starting' })
      }
    }
  } finally {
    clearInterval(heartbeat)
    if (watcher !== undefined) clearInterval(watcher)
    await closeListener()
    await app?.close()
  }
}
