// The image CI builds from docker/Dockerfile (scripts/image.sh, `npm run image`), run with podman
// the way the DaemonSet runs it. Tests never build it: they use what the script made, in the
// script's own container storage (`scripts/image.sh env` says where). Outside CI a missing image
// is a skip with its reason; in CI (CI=true) it is a failure, so the image is never untested.

import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import type { TestContext } from 'node:test'
import { REPO } from './cli.ts'
import { isRoot } from './fake-node.ts'
import { waitForLine } from './log-lines.ts'

export const IN_CI = process.env.CI === 'true'

/** CONTAINERS_STORAGE_CONF, CONTAINERS_CONF and PKG_SERVE_IMAGE, as the build script sets them. */
function imageEnv (): Record<string, string> {
  const r = spawnSync('bash', ['-c', 'eval "$(bash "$1" env)" && env -0', 'bash', join(REPO, 'scripts/image.sh')], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`scripts/image.sh env failed: ${r.stderr}`)
  const wanted = ['CONTAINERS_STORAGE_CONF', 'CONTAINERS_CONF', 'PKG_SERVE_IMAGE']
  return Object.fromEntries(r.stdout.split('\0').map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]).filter(([k]) => wanted.includes(k ?? '')))
}

const ENV = imageEnv()
export const IMAGE = ENV.PKG_SERVE_IMAGE ?? 'localhost/pkg-serve:ci'
const PODMAN_ENV = { ...process.env, ...ENV }

export interface Result { readonly status: number | null, readonly stdout: string, readonly stderr: string }

/** podman (root) on the build script's storage, run to completion. */
export function podman (args: readonly string[], env: Record<string, string> = {}): Result {
  const r = spawnSync('podman', args, { env: { ...PODMAN_ENV, ...env }, encoding: 'utf8', timeout: 120_000 })
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error?.message ?? '') }
}

function imageExists (): boolean {
  return spawnSync('podman', ['image', 'exists', IMAGE], { env: PODMAN_ENV }).status === 0
}

const BUILD_IT = 'npm run image builds it; .ci/run does before the tests'

/** The reason to skip outside CI, or false (in CI nothing is skipped: see requireImage). */
export function imageSkip (): string | false {
  if (IN_CI) return false
  if (!isRoot) return 'needs root: podman runs the image as root, privileged (CI runs as root)'
  if (!imageExists()) return `no image ${IMAGE} (${BUILD_IT})`
  return false
}

/** Fails the test with one clear line where CI would otherwise test nothing. */
export function requireImage (): void {
  if (!isRoot) throw new Error('the image tests need root (podman, privileged), and CI runs as root')
  if (!imageExists()) throw new Error(`no image ${IMAGE}: ${BUILD_IT}`)
}

let serial = 0

export interface Container {
  readonly name: string
  readonly child: ChildProcess
  /** Every log line of the container so far (JSON lines parsed; anything else as { msg, raw }). */
  readonly logs: Array<Record<string, unknown>>
  /** Resolves with the first line that matches; rejects when the container exits first. */
  waitForLog (predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>
  exited (): Promise<number | null>
}

/**
 * `podman run IMAGE ARGS`, attached, removed when it exits and at the end of the test at the
 * latest. RUN_ARGS go before the image (mounts, --privileged, --entrypoint ...).
 */
export function startContainer (t: TestContext, runArgs: readonly string[], args: readonly string[], env: Record<string, string> = {}): Container {
  const name = `pkg-serve-test-${process.pid}-${serial++}`
  const child = spawn('podman', ['run', '--rm', '--pull=never', '--name', name, ...runArgs, IMAGE, ...args], { env: { ...PODMAN_ENV, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const logs: Array<Record<string, unknown>> = []
  const waiters = new Set<() => void>()
  let buffered = ''
  const take = (chunk: string): void => {
    buffered += chunk
    let nl
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        logs.push({ msg: line, raw: true })
      }
    }
    for (const w of waiters) w()
  }
  child.stdout.setEncoding('utf8').on('data', take)
  child.stderr.setEncoding('utf8').on('data', take)
  const exit = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      for (const w of waiters) w()
      resolve(code)
    })
  })
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      podman(['rm', '--force', '--time', '0', name])
      await exit
    }
  })
  return {
    name,
    child,
    logs,
    waitForLog (predicate, timeoutMs = 120_000) {
      return waitForLine({ child, logs, waiters, who: 'the container', context: () => `last lines: ${JSON.stringify(logs.slice(-8))}` }, predicate, timeoutMs)
    },
    exited: () => exit
  }
}
