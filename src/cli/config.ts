// Command-line configuration: one zod schema per command turns argv + PKG_SERVE_* variables
// into a typed, frozen config before anything starts. Errors are one readable line each.

import { z } from 'zod'
import { UserError } from '../lib/errors.ts'

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

const port = z.coerce.number({ message: 'must be a number' }).int('must be a whole number').min(0, 'must be 0 to 65535').max(65535, 'must be 0 to 65535')

// Azure container names: 3-63 lowercase letters, digits and single hyphens ($root and $web aside).
const container = z.string().regex(/^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/, 'must be an Azure container name (3-63 lowercase letters, digits and hyphens)')

const seconds = (max: number) => z.coerce.number({ message: 'must be a number of seconds' }).min(0, 'must not be negative').max(max, `must be at most ${max} seconds`)

const logLevel = z.enum(LOG_LEVELS, { message: `must be one of ${LOG_LEVELS.join(', ')}` })

const manifest = z.string().min(1).max(1024).refine((p) => !p.startsWith('/') && !p.split('/').includes('..'), 'must be a blob name in the container')

/** Where the blobs are and as whom they are read: every command's storage flags. */
export const storageOptionsSchema = z.object({
  storage: z.string().optional(),
  container,
  endpointSuffix: z.string().regex(/^[a-z0-9.-]+$/i, 'must be a DNS suffix such as core.windows.net'),
  identityClientId: z.string().optional(),
  /** The node's azure.json, read for the kubelet identity. */
  azureJson: z.string().min(1),
  /** Seconds: the bound on each storage request and on a silent download. */
  storageTimeout: z.coerce.number({ message: 'must be a number of seconds' }).min(0.1, 'must be at least 0.1 seconds').max(3600, 'must be at most 3600 seconds')
})

export type StorageConfig = Readonly<z.infer<typeof storageOptionsSchema>>

/**
 * How a server reads large blobs unless told otherwise: the flags' defaults, and the local
 * setup's (scripts/dev.ts). 2 MiB chunks on 6 connections within 12 MiB of read-ahead: ~3.5× one
 * connection's speed from storage that limits each connection, and 8 downloads at once plus a
 * slow one peak within ~25 MiB of RSS of the same read one request each (bench/README.md).
 */
export const READ_DEFAULTS = { readConnections: 6, readChunk: 2, readAhead: 12, readMinSpeedup: 1.5 } as const

/** The package server's flags, shared by `serve` and `run`. */
export const serverOptionsSchema = storageOptionsSchema.extend({
  port,
  host: z.string().min(1, 'must not be empty'),
  manifest,
  pollInterval: z.coerce.number({ message: 'must be a number of seconds' }).min(0, 'must be 0 (off) or more seconds').max(86_400, 'must be at most 86400 seconds'),
  /** Storage connections one large download reads over at once (1: one read). */
  readConnections: z.coerce.number({ message: 'must be a number' }).int('must be a whole number').min(1, 'must be 1 (off) to 32').max(32, 'must be 1 (off) to 32'),
  /** MiB per ranged read of a large download; blobs of two chunks or more are read in parallel. */
  readChunk: z.coerce.number({ message: 'must be a number of MiB' }).min(0.0625, 'must be at least 0.0625 MiB (64 KiB)').max(256, 'must be at most 256 MiB'),
  /** MiB of read-ahead memory shared by every download of the process. */
  readAhead: z.coerce.number({ message: 'must be a number of MiB' }).min(0, 'must not be negative').max(4096, 'must be at most 4096 MiB'),
  /** How many times one read's speed parallel reads must reach to go on (0: always parallel). */
  readMinSpeedup: z.coerce.number({ message: 'must be a number' }).min(0, 'must be 0 (always) or more').max(32, 'must be at most 32')
})

export type ServerConfig = Readonly<z.infer<typeof serverOptionsSchema>>

export const serveConfigSchema = serverOptionsSchema.extend({ logLevel })

export type ServeConfig = Readonly<z.infer<typeof serveConfigSchema>>

/** The launcher's own flags (`run`), on top of the server's. */
export const launcherOptionsSchema = serverOptionsSchema.extend({
  action: z.string().min(1, 'ACTION must not be empty'),
  storage: z.string().min(1, 'STORAGE must not be empty'),
  scriptArgs: z.array(z.string()).readonly(),
  actionsDir: z.string().min(1),
  hostDir: z.string().min(1),
  hostPath: z.string().regex(/^\//, 'must be an absolute path on the node'),
  nsenter: z.boolean(),
  nsenterTarget: z.string().regex(/^[1-9]\d*$/, 'must be a process id'),
  scriptCgroup: z.enum(['pod', 'node'], { message: 'must be pod or node' }),
  once: z.boolean(),
  force: z.boolean(),
  onFailure: z.enum(['exit', 'retry'], { message: 'must be exit or retry' }),
  watch: z.boolean(),
  /** Seconds between checks of the action's content for --watch. */
  watchInterval: seconds(3600).min(0.05, 'must be at least 0.05 seconds'),
  stateDir: z.string().min(1),
  keepServing: z.boolean(),
  exitOnSuccess: z.boolean(),
  /** Seconds before the first retry; doubles per failure up to retryMaxDelay. */
  retryDelay: seconds(86_400),
  retryMaxDelay: seconds(86_400),
  /** Seconds between SIGTERM and SIGKILL for the script's processes. */
  killGrace: seconds(3600),
  /** Seconds to wait for the first manifest before running the script anyway. */
  readyTimeout: seconds(3600)
})

export type LauncherConfig = Readonly<z.infer<typeof launcherOptionsSchema>>

export const runConfigSchema = launcherOptionsSchema.extend({ logLevel })

export type RunConfig = Readonly<z.infer<typeof runConfigSchema>>

export const publishConfigSchema = storageOptionsSchema.extend({
  file: z.string().min(1, 'FILE must not be empty'),
  name: z.string(),
  tag: z.string(),
  path: z.string().optional(),
  sha256: z.boolean(),
  overwrite: z.boolean(),
  manifest,
  logLevel
})

export type PublishConfig = Readonly<z.infer<typeof publishConfigSchema>>

export const validateConfigSchema = storageOptionsSchema.extend({
  file: z.string().min(1, 'FILE must not be empty'),
  remote: z.string().min(1).optional(),
  logLevel
})

export type ValidateConfig = Readonly<z.infer<typeof validateConfigSchema>>

/** Reads a boolean flag's PKG_SERVE_* variable: 1/true/yes/on or 0/false/no/off. */
export function parseBooleanEnv (name: string, value: string): boolean {
  if (/^(1|true|yes|on)$/i.test(value.trim())) return true
  if (/^(0|false|no|off)?$/i.test(value.trim())) return false
  throw new ConfigError(`invalid ${name} ${JSON.stringify(value)}: use true or false`)
}

export class ConfigError extends UserError {
  override name = 'ConfigError'
}

/**
 * Parses raw option values; throws ConfigError naming the flag (as `flagOf` spells it: the
 * command's own option list) and what it must be.
 */
export function parseConfig<T extends z.ZodType> (schema: T, raw: Readonly<Record<string, unknown>>, flagOf: (key: string) => string): Readonly<z.infer<T>> {
  const result = schema.safeParse(raw)
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '')
      const value = raw[key]
      return `${flagOf(key)} ${value === undefined ? '' : `${JSON.stringify(value)} `}${issue.message}`
    })
    throw new ConfigError(`invalid ${problems.join('; ')}`)
  }
  return Object.freeze(result.data)
}
