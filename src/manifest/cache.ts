// Keeps the last good manifest in memory and refreshes it by polling the blob's ETag.
// An unchanged manifest costs one conditional request and no download; a rejected or
// unreadable one never replaces the last good manifest, it is only reported. Before the first
// good load it retries with capped exponential backoff, so a server started while storage is
// down becomes ready on its own. A rejected manifest is reported once per version (ETag): the
// next polls ask for it conditionally on that ETag and stay quiet while it is unchanged.
// Timers are unref()ed: the cache never keeps a process alive.

import { ManifestError, parseManifest } from './parse.ts'
import type { Manifest } from './parse.ts'
import type { BlobStore } from '../storage/types.ts'
import { backoffDelay } from '../lib/backoff.ts'
import { count } from '../lib/words.ts'

export type ReloadResult = 'loaded' | 'unchanged' | 'rejected' | 'error'

export interface ManifestCacheOptions {
  readonly store: BlobStore
  /** Blob name of the manifest in the container. */
  readonly path: string
  /** Seconds between polls once loaded; 0 disables polling after the first good load. */
  readonly pollIntervalSeconds: number
  /** Backoff before the first good load (defaults: 1 s doubling up to 30 s). */
  readonly retryMinMs?: number
  readonly retryMaxMs?: number
  readonly log: { info: (obj: object, msg: string) => void, warn: (obj: object, msg: string) => void }
  readonly onCheck?: (result: ReloadResult, manifest: Manifest | undefined) => void
}

export interface ManifestStatus {
  readonly ready: boolean
  readonly source: string
  readonly etag: string | null
  readonly loadedAt: string | null
  readonly checkedAt: string | null
  readonly packages: number
  readonly entries: number
  readonly lastError: { readonly message: string, readonly at: string } | null
}

export interface ManifestCache {
  /** The manifest to serve, or undefined before the first good load. */
  readonly manifest: Manifest | undefined
  status (): ManifestStatus
  /** One check now: fetch if changed, validate, swap. Never throws; returns what happened. */
  check (): Promise<ReloadResult>
  /** First check, then polling in the background. */
  start (): Promise<ReloadResult>
  stop (): void
}

export function createManifestCache (opts: ManifestCacheOptions): ManifestCache {
  const retryMinMs = opts.retryMinMs ?? 1000
  const retryMaxMs = opts.retryMaxMs ?? 30_000
  let manifest: Manifest | undefined
  let etag: string | undefined
  /** The ETag of the last manifest version that was rejected, while it is the current one. */
  let rejectedEtag: string | undefined
  let loadedAt: Date | undefined
  let checkedAt: Date | undefined
  let lastError: { message: string, at: Date } | undefined
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  let failures = 0
  let inFlight: Promise<ReloadResult> | undefined

  async function checkOnce (): Promise<ReloadResult> {
    let result: ReloadResult
    let readEtag: string | undefined
    try {
      const read = await opts.store.readText(opts.path, rejectedEtag ?? (manifest === undefined ? undefined : etag))
      if (!read.changed) {
        // Still the version rejected before: it was reported then, and /readyz still says why.
        result = rejectedEtag !== undefined ? 'rejected' : 'unchanged'
      } else {
        readEtag = read.etag
        const next = parseManifest(read.text, opts.path)
        manifest = next
        etag = read.etag
        rejectedEtag = undefined
        loadedAt = new Date()
        lastError = undefined
        result = 'loaded'
        opts.log.info({ etag, entries: next.entryCount }, `manifest ${opts.path} loaded: ${count(next.packages.size, 'package')}, ${count(next.entryCount, 'entry', 'entries')}`)
      }
    } catch (err) {
      result = err instanceof ManifestError ? 'rejected' : 'error'
      if (result === 'rejected') rejectedEtag = readEtag
      const message = err instanceof Error ? err.message : String(err)
      lastError = { message, at: new Date() }
      const keeping = manifest === undefined ? 'no manifest is loaded yet' : `still serving the manifest with ETag ${etag ?? ''}`
      opts.log.warn({ err: { message, kind: result } }, `manifest ${result === 'rejected' ? `rejected (ETag ${readEtag ?? '?'}; said once until it changes)` : 'check failed'}: ${message} (${keeping})`)
    }
    checkedAt = new Date()
    opts.onCheck?.(result, manifest)
    return result
  }

  function check (): Promise<ReloadResult> {
    // Concurrent callers share one request.
    inFlight ??= checkOnce().finally(() => { inFlight = undefined })
    return inFlight
  }

  function schedule (): void {
    if (stopped) return
    let delay: number
    if (manifest === undefined) {
      delay = backoffDelay({ initialMs: retryMinMs, maxMs: retryMaxMs, jitter: 0.2 }, failures)
      failures++
    } else {
      failures = 0
      if (opts.pollIntervalSeconds <= 0) return
      // ±10% jitter so a fleet of nodes does not poll in lockstep.
      delay = opts.pollIntervalSeconds * 1000 * (0.9 + Math.random() * 0.2)
    }
    timer = setTimeout(() => {
      timer = undefined
      check().then(schedule, schedule)
    }, delay)
    timer.unref()
  }

  return {
    get manifest () { return manifest },
    status () {
      let packages = 0
      if (manifest !== undefined) packages = manifest.packages.size
      return {
        ready: manifest !== undefined,
        source: opts.path,
        etag: etag ?? null,
        loadedAt: loadedAt?.toISOString() ?? null,
        checkedAt: checkedAt?.toISOString() ?? null,
        packages,
        entries: manifest?.entryCount ?? 0,
        lastError: lastError === undefined ? null : { message: lastError.message, at: lastError.at.toISOString() }
      }
    },
    check,
    async start () {
      stopped = false
      const result = await check()
      schedule()
      return result
    },
    stop () {
      stopped = true
      if (timer !== undefined) clearTimeout(timer)
      timer = undefined
    }
  }
}
