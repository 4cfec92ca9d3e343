// The Prometheus metrics operators alert on. One Registry per app instance (never the global
// default), so several apps in one process (tests, the launcher) do not collide.

import type { ServerResponse } from 'node:http'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { StorageStats } from '../storage/types.ts'

/**
 * Calls `ended` once a response is over: finished (its last byte handed to the OS) or not (the
 * client left, or the transfer was broken). At once when its connection is already gone.
 */
export function whenEnded (res: ServerResponse, ended: (finished: boolean) => void): void {
  if (res.destroyed) {
    ended(res.writableFinished)
    return
  }
  let finished = false
  res.once('finish', () => { finished = true })
  res.once('close', () => { ended(finished) })
}

/** The storage backend's own counters, read at each scrape. */
function storageMetrics (registry: Registry, stats: StorageStats): void {
  /** A Prometheus counter that follows one of the backend's running totals. */
  const following = (name: string, help: string, total: () => number): void => {
    let counted = 0
    // eslint-disable-next-line no-new -- it registers itself with the registry
    new Counter({
      name,
      help,
      registers: [registry],
      collect () {
        const now = total()
        this.inc(now - counted)
        counted = now
      }
    })
  }
  following('pkg_serve_storage_requests_total', 'Requests sent to storage for downloads (retries, resumes and parallel ranges included)', () => stats.requests)
  following('pkg_serve_storage_bytes_read_total', 'Download bytes received from storage', () => stats.bytesRead)
  // eslint-disable-next-line no-new -- it registers itself with the registry
  new Gauge({
    name: 'pkg_serve_read_ahead_bytes',
    help: 'Memory held by parallel reads ahead of their clients (bounded by --read-ahead)',
    registers: [registry],
    collect () { this.set(stats.readAheadBytes) }
  })
}

export function createMetrics (stats?: StorageStats) {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'pkg_serve_' })
  if (stats !== undefined) storageMetrics(registry, stats)
  return {
    registry,
    requests: new Counter({
      name: 'pkg_serve_http_requests_total',
      help: 'HTTP requests, by method, route and status code ("aborted": the response never finished: the client left, or the download broke)',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry]
    }),
    requestDuration: new Histogram({
      name: 'pkg_serve_http_request_duration_seconds',
      help: 'Time from request to the end of the response, by route',
      labelNames: ['route'] as const,
      buckets: [0.005, 0.025, 0.1, 0.5, 2, 10, 60, 300],
      registers: [registry]
    }),
    bytesServed: new Counter({
      name: 'pkg_serve_bytes_served_total',
      help: 'Package bytes sent in completed downloads',
      registers: [registry]
    }),
    downloads: new Counter({
      name: 'pkg_serve_downloads_total',
      help: 'Package downloads (GET bodies), by result: complete, aborted (client left or transfer broken)',
      labelNames: ['result'] as const,
      registers: [registry]
    }),
    storageErrors: new Counter({
      name: 'pkg_serve_storage_errors_total',
      help: 'Storage failures, by kind (not-found, denied, unreachable, timeout, changed, integrity, failed)',
      labelNames: ['kind'] as const,
      registers: [registry]
    }),
    manifestReloads: new Counter({
      name: 'pkg_serve_manifest_reloads_total',
      help: 'Manifest checks, by result (loaded, unchanged, rejected, error)',
      labelNames: ['result'] as const,
      registers: [registry]
    }),
    scriptRuns: new Counter({
      name: 'pkg_serve_script_runs_total',
      help: 'Runs of the action by the launcher, by result (succeeded, failed, stopped, skipped)',
      labelNames: ['result'] as const,
      registers: [registry]
    }),
    manifestLoaded: new Gauge({
      name: 'pkg_serve_manifest_loaded',
      help: '1 when a manifest is loaded and packages can be served',
      registers: [registry]
    }),
    manifestEntries: new Gauge({
      name: 'pkg_serve_manifest_entries',
      help: 'Package tags in the manifest being served',
      registers: [registry]
    })
  }
}

export type Metrics = ReturnType<typeof createMetrics>
