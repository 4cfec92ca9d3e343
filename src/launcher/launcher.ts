// The DaemonSet entrypoint's life: copy the action to the host, open the package server on a
// free loopback port, run the action on the node through nsenter, report (log, status.json,
// ready file), close the port, then idle — or retry, or rerun when the ConfigMap changes.
// It must never leave the script's processes behind on a stop (the run's cgroup, cgroup.ts),
// never pass its own environment (credentials) to the script, never keep the port open after
// success unless asked to, and never show a run as "running" that it is not running: at start it
// ends what an earlier launcher of the same action left (a crash, an OOM kill) and says so.

import { constants as osConstants } from 'node:os'
import { dirname } from 'node:path'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { Listener } from '../http/listen.ts'
import { listenApp, openApp, urlFor } from '../server.ts'
import type { LauncherConfig } from '../cli/config.ts'
import { checkActionName, installAction, listActions, readAction } from './actions.ts'
import type { ActionScript } from './actions.ts'
import { buildCommand } from './nsenter.ts'
import { runScript } from './supervise.ts'
import type { ScriptResult } from './supervise.ts'
import { createOnceRecords, createRunRecords, createStateDir, runKey, stillRunning, thisLauncher } from './state.ts'
import type { LauncherProcess, Recovered, Status } from './state.ts'
import { cgroupPids, createCgroup, describe, exists, isRunCgroup, placeRun, runCgroupOwner, runCgroupsOf, stopCgroup } from './cgroup.ts'
import type { RunCgroup } from './cgroup.ts'
import { withoutQuery } from '../lib/net.ts'
import { backoffDelay, wait } from '../lib/backoff.ts'
import { messageOf } from '../lib/errors.ts'

export interface LauncherDeps {
  readonly logger: FastifyBaseLogger
  readonly env: Readonly<Record<string, string | undefined>>
  /** Aborted on SIGTERM/SIGINT. */
  readonly stop: AbortSignal
}

/** PATH for the script on the node; nothing else of this container's environment is passed. */
const NODE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** The shell's convention: 128 + the number of the signal that ended the process. */
export function exitCodeOf (result: Pick<ScriptResult, 'exitCode' | 'signal'>): number {
  if (result.exitCode !== null) return result.exitCode
  return 128 + (result.signal !== null ? osConstants.signals[result.signal] : 1)
}

const STOPPED_EXIT_CODE = 128 + osConstants.signals.SIGTERM

/** Resolves when any signal aborts, or after ms (undefined: never); says which. */
async function waitFor (signals: readonly AbortSignal[], ms?: number): Promise<'timeout' | AbortSignal> {
  const any = AbortSignal.any([...signals])
  try {
    if (ms !== undefined) {
      await wait(ms, any)
      return 'timeout'
    }
    // A ref'd timer: an idle launcher must stay alive until it is told to stop.
    for (;;) await wait(2 ** 31 - 1, any)
  } catch (err) {
    const aborted = signals.find((s) => s.aborted)
    if (aborted === undefined) throw err
    return aborted
  }
}

/**
 * Ends what an earlier launcher of this action left running (it crashed or was OOM-killed while
 * its script ran): in the pod, the cgroup at this action's known path; on the node, every cgroup
 * of this action whose launcher no longer runs (another one's that still runs is its own; one
 * named for no launcher only when no other launcher of the action is known to run); and the one
 * the earlier launcher's last status names (`previous`: only a launcher that is gone).
 * Says so in the log; the result goes into status.json with the earlier status.
 */
async function recoverEarlierRun (
  config: LauncherConfig, placement: RunCgroup | undefined, previous: Status | undefined, otherRunning: boolean, log: FastifyBaseLogger
): Promise<Recovered | undefined> {
  const ended = (owner: LauncherProcess | null | undefined): boolean => owner === null || owner === undefined ? !otherRunning : !stillRunning(owner)
  const dirs = new Set<string>()
  if (placement?.mode === 'pod') dirs.add(placement.dir)
  if (placement?.mode === 'node') {
    for (const c of await runCgroupsOf(dirname(placement.dir), config.action)) if (ended(c.owner)) dirs.add(c.dir)
  }
  const recorded = previous?.cgroup
  if (typeof recorded === 'string' && await isRunCgroup(recorded, config.action) && ended(runCgroupOwner(recorded, config.action))) dirs.add(recorded)

  const found: string[] = []
  let stoppedProcesses = 0
  for (const dir of dirs) {
    if (!await exists(dir)) continue
    found.push(dir)
    const pids = await cgroupPids(dir)
    const processes = await describe(pids)
    const result = await stopCgroup(dir, config.killGrace * 1000)
    stoppedProcesses += result.processes
    if (result.processes > 0) {
      log.warn({ cgroup: dir, processes, killed: result.killed, previousPhase: previous?.phase },
        `an earlier launcher of action ${config.action} left ${result.processes} process(es) running in cgroup ${dir}${dir === recorded || placement?.mode === 'pod' ? describePrevious(previous) : ''}: stopped them${result.killed ? ' (some needed SIGKILL)' : ''}`)
    }
    if (!result.removed) log.error({ cgroup: dir }, `cgroup ${dir} of an earlier run could not be removed: a process in it does not die (uninterruptible I/O?)`)
  }
  const interrupted = previous?.phase === 'running'
  if (interrupted && stoppedProcesses === 0) {
    log.warn({ previousPhase: previous.phase }, `the earlier launcher of action ${config.action} ended while its run was in progress${describePrevious(previous)}; that run never finished and ${placement !== undefined ? 'nothing of it is left running' : 'without cgroup v2 its leftovers cannot be found'}`)
  }
  if (!interrupted && stoppedProcesses === 0) return undefined
  const earlier: Omit<Status, 'recovered'> | null = previous === undefined ? null : (({ recovered: _, ...rest }) => rest)(previous)
  return { at: new Date().toISOString(), previous: earlier, stoppedProcesses, cgroups: found }
}

/** The later of two statuses (by updatedAt); one without a readable time loses. */
function newer (a: Status | undefined, b: Status | undefined): Status | undefined {
  const at = (s: Status | undefined): number => typeof s?.updatedAt === 'string' ? Date.parse(s.updatedAt) || 0 : -1
  return at(a) >= at(b) ? a : b
}

function describePrevious (previous: Status | undefined): string {
  if (previous === undefined) return ''
  const since = previous.startedAt != null ? ` since ${previous.startedAt}` : ''
  return ` (its last status: ${previous.phase}${since}, attempt ${previous.attempts})`
}

export async function runLauncher (config: LauncherConfig, deps: LauncherDeps): Promise<number> {
  checkActionName(config.action)
  const log = deps.logger.child({ action: config.action })
  const state = createStateDir(config.stateDir)
  const once = createOnceRecords(config.hostDir)
  const runs = createRunRecords(config.hostDir)
  const args = [...config.scriptArgs]
  const { stop } = deps

  const launcher = thisLauncher()
  let status: Omit<Status, 'updatedAt'> = { phase: 'starting', action: config.action, args, attempts: 0, ...(launcher !== undefined && { launcher }) }
  let recordFailed = false
  const update = async (patch: Partial<Omit<Status, 'updatedAt'>>): Promise<void> => {
    status = { ...status, ...patch }
    await state.write(status)
    try {
      await runs.write(status)
    } catch (err) {
      // Only the next launcher's recovery after a container restart depends on it: a warning, once.
      if (!recordFailed) log.warn({ hostDir: config.hostDir }, `cannot keep the run record in ${config.hostDir} (${messageOf(err)}): a launcher in a restarted container will not know what this one was running`)
      recordFailed = true
      await runs.forget(config.action).catch(() => {})
    }
  }
  // What an earlier launcher of this action last said: in this container's state dir (a restart
  // in place, a local run) or on the node (a restarted container or a new pod); the later one.
  // A local run may share its state dir with other actions: their statuses are not this one's.
  const ofThisAction = (s: Status | undefined): Status | undefined => s?.action === config.action ? s : undefined
  const [local, onNode] = await Promise.all([state.read(), runs.read(config.action)])
  const later = newer(ofThisAction(local), ofThisAction(onNode))
  // Unless its writer still runs: another launcher of this action on the node (a second pod of a
  // rollout, another DaemonSet with the same action name), whose run is not for this one to end.
  const otherRunning = later !== undefined && stillRunning(later.launcher)
  if (otherRunning) {
    log.warn({ otherLauncher: later.launcher, otherPhase: later.phase }, `another launcher of action ${config.action} is running on this node (PID ${later.launcher?.pid ?? ''}, ${later.phase}): its run is not an earlier one and is left to it`)
  }
  const earlier = otherRunning ? undefined : later
  await state.init()

  // Where the runs' cgroup goes, or why there is none; then end what an earlier launcher left,
  // before anything of this one starts.
  const placement = await placeRun({ ...config, owner: launcher })
  if ('unavailable' in placement) {
    log.warn({ reason: placement.unavailable }, `no cgroup v2 for the script (${placement.unavailable}): falling back to its process tree, which a daemon started with setsid or a double fork can leave; it may outlive a stop`)
  } else {
    log.info({ cgroup: placement.dir, scriptCgroup: placement.mode }, `the script runs in cgroup ${placement.dir} (${placement.mode === 'pod' ? "inside the pod's cgroup: the pod's limits apply" : "on the node: the pod's limits do not apply"})`)
  }
  // From here on a failure is recorded: never leave "running" (or "starting") behind for a run
  // this launcher no longer runs, the earlier launcher's included.
  const failed = async (err: unknown): Promise<never> => {
    await update({ phase: 'failed', cgroup: null, message: `pkg-serve failed: ${messageOf(err)}` }).catch(() => {})
    throw err
  }
  const recovered = await recoverEarlierRun(config, 'unavailable' in placement ? undefined : placement, earlier, otherRunning, log).catch(failed)
  // At once: the earlier launcher's "running" must not stay on show while this one starts up.
  await update(recovered !== undefined ? { recovered } : {})
  let script: ActionScript = await readAction(config.actionsDir, config.action).catch(failed)
  await update({ scriptSha256: script.sha256 })
  await state.heartbeat()
  const heartbeat = setInterval(() => { state.heartbeat().catch(() => {}) }, 10_000)
  heartbeat.unref()

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

    // The run's own cgroup; should it fail (permissions, a read-only mount), the process tree.
    let cgroup: RunCgroup | undefined
    if (!('unavailable' in placement)) {
      try {
        await createCgroup(placement.dir)
        cgroup = placement
      } catch (err) {
        log.warn({ cgroup: placement.dir, err: messageOf(err) }, `cannot make the cgroup ${placement.dir} for the run (${messageOf(err)}): falling back to the script's process tree`)
      }
    }
    const command = buildCommand({ ...config, args, cgroup })
    const env = {
      PATH: NODE_PATH,
      HOME: '/root',
      PKG_SERVE_RUN_PORT: String(port),
      PKG_SERVE_RUN_URL: urlFor(config.host, port),
      PKG_SERVE_STORAGE: withoutQuery(config.storage ?? '')
    }
    const startedAt = new Date()
    await update({ phase: 'running', attempts: status.attempts + 1, port, cgroup: cgroup?.dir ?? null, startedAt: startedAt.toISOString(), finishedAt: null, durationMs: null, exitCode: null, signal: null, nextAttemptAt: null })
    log.info({ argv: [command.file, ...command.args], port }, `running action ${config.action} (attempt ${status.attempts}) with PKG_SERVE_RUN_PORT=${port}`)

    const running = runScript(command.file, command.args, env, {
      line: (stream, text, continues) => { log.info(continues ? { stream, continues } : { stream }, text) },
      warn: (fields, message) => { log.warn(fields, message) }
    }, { cgroup: cgroup?.dir, graceMs: config.killGrace * 1000 })
    const finished = new AbortController()
    running.done.then(() => { finished.abort() }, () => {})
    let result: ScriptResult
    try {
      const why = await waitFor([finished.signal, stop, changed.signal])
      result = why === finished.signal ? await running.done : await running.stop(config.killGrace * 1000)
    } catch (err) {
      // Whatever went wrong here, the script must not run on unsupervised.
      await running.stop(config.killGrace * 1000)
      throw err
    }
    const seconds = (result.durationMs / 1000).toFixed(2)
    const how = result.stopped
      ? `stopped (${stop.aborted ? 'pkg-serve is stopping' : 'the action changed'})`
      : result.exitCode !== null ? `exited with code ${result.exitCode}` : `was killed by ${result.signal ?? 'a signal'}`
    log[result.exitCode === 0 && !result.stopped ? 'info' : 'warn'](
      { exitCode: result.exitCode, signal: result.signal, durationMs: result.durationMs },
      `action ${config.action} ${how} after ${seconds}s`
    )
    await update({ exitCode: result.exitCode, signal: result.signal, cgroup: null, finishedAt: new Date().toISOString(), durationMs: result.durationMs })
    return result
  }

  try {
    return await loop()
  } catch (err) {
    return await failed(err)
  } finally {
    clearInterval(heartbeat)
    if (watcher !== undefined) clearInterval(watcher)
    await closeListener()
    await app?.close()
  }

  async function loop (): Promise<number> {
    for (;;) {
      await state.setReady(false)
      const result = await runOnce()
      const succeeded = result === 'skipped' || (result.exitCode === 0 && !result.stopped)
      app?.metrics.scriptRuns.inc({ result: result === 'skipped' ? 'skipped' : result.stopped ? 'stopped' : succeeded ? 'succeeded' : 'failed' })
      if (!(succeeded && config.keepServing)) await closeListener()

      if (result !== 'skipped' && result.stopped) {
        if (stop.aborted) {
          await update({ phase: 'stopped' })
          return STOPPED_EXIT_CODE
        }
      } else if (succeeded) {
        if (result !== 'skipped') {
          try {
            await once.record(config.action, runKey(script.sha256, args), args)
          } catch (err) {
            // The run succeeded; a missing record only means the next start runs it again.
            log.warn({ err: messageOf(err) }, `cannot write the --once record in ${config.hostDir} (${messageOf(err)}): the action succeeded, but the next start will run it again`)
          }
        }
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
        // Jitter: nodes that fail together (storage down) must not retry in lockstep.
        const delayMs = backoffDelay({ initialMs: config.retryDelay * 1000, maxMs: config.retryMaxDelay * 1000, jitter: 0.2 }, status.attempts - 1)
        const delayS = Number((delayMs / 1000).toFixed(1))
        await update({ phase: 'retrying', nextAttemptAt: new Date(Date.now() + delayMs).toISOString(), message: `exit code ${code}` })
        log.warn({ delaySeconds: delayS }, `retrying action ${config.action} in ${delayS}s (--on-failure retry)`)
        if (await waitFor([stop, changed.signal], delayMs) === stop) {
          // Stopped before the script ever succeeded: not a clean exit.
          await update({ phase: 'stopped' })
          return STOPPED_EXIT_CODE
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
  }
}
