// The pkg-serve application as a Fastify plugin that never listens: whoever listens (the serve
// command, the launcher, tests with inject) owns the logger, timeouts and shutdown.
// One error handler keeps every failure's true status and answers {statusCode, error, message}.

import { STATUS_CODES } from 'node:http'
import sensible from '@fastify/sensible'
import Fastify from 'fastify'
import type { FastifyError, FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import manifestPlugin from './plugins/manifest.ts'
import type { ManifestPluginOptions } from './plugins/manifest.ts'
import metricsPlugin, { countRequest } from './plugins/metrics.ts'
import storagePlugin from './plugins/storage.ts'
import healthRoutes from './routes/health.ts'
import metricsRoutes from './routes/metrics.ts'
import packageRoutes from './routes/packages.ts'
import { storageFailure } from './http/errors.ts'
import { IntegrityError } from './storage/sha256.ts'
import { isStorageError } from './storage/types.ts'
import type { BlobStore } from './storage/types.ts'

/** The manifest cache's options, and the store it reads from. */
export interface AppOptions extends ManifestPluginOptions {
  readonly store: BlobStore
}

/** Fastify options every owner of the app uses (router limits sized for manifest names). */
export const serverOptions = {
  routerOptions: { ignoreTrailingSlash: true, maxParamLength: 300 },
  // The download route streams; it needs no request body at all, and nothing else needs much.
  bodyLimit: 64 * 1024,
  return503OnClosing: true,
  // What the router refuses before any route or hook runs, in the shape of every other error
  // (Fastify's own has a different shape and echoes the path), and counted like every request.
  frameworkErrors (error, request: FastifyRequest, reply: FastifyReply) {
    const [statusCode, message] = error.code === 'FST_ERR_MAX_PARAM_LENGTH'
      ? [404, 'no package or tag has a name that long (at most 128 of A-Z a-z 0-9 . _ -); try GET /pkg for the package list']
      : error.code === 'FST_ERR_BAD_URL'
        ? [400, 'the path is not a valid URL (a bad %-escape?); try GET /pkg for the package list']
        : [500, 'internal error: see the server log']
    if (statusCode === 500) request.log.error({ err: error }, `${request.method} ${request.url} failed: ${error.message}`)
    countRequest(request.server.metrics, request, reply)
    reply.code(statusCode).type('application/json; charset=utf-8').send({ statusCode, error: STATUS_CODES[statusCode], message })
  }
} satisfies FastifyServerOptions

const app: FastifyPluginAsync<AppOptions> = async function app (fastify, opts) {
  fastify.setValidatorCompiler(validatorCompiler)
  fastify.setSerializerCompiler(serializerCompiler)

  await fastify.register(sensible)
  await fastify.register(metricsPlugin, { stats: opts.store.stats })
  await fastify.register(storagePlugin, { store: opts.store })
  await fastify.register(manifestPlugin, {
    manifestPath: opts.manifestPath,
    pollIntervalSeconds: opts.pollIntervalSeconds,
    ...(opts.retryMinMs !== undefined && { retryMinMs: opts.retryMinMs }),
    ...(opts.retryMaxMs !== undefined && { retryMaxMs: opts.retryMaxMs }),
    ...(opts.bootWaitMs !== undefined && { bootWaitMs: opts.bootWaitMs })
  })

  fastify.setErrorHandler(function errorHandler (error: FastifyError & { headers?: Record<string, string> }, request, reply) {
    let statusCode = typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 600 ? error.statusCode : 500
    let message = error.message
    // A download stream that failed before its first byte reaches here rather than breaking the
    // connection: keep its true status.
    if (isStorageError(error)) {
      const failure = storageFailure(error, `${request.method} ${request.url}`)
      statusCode = failure.statusCode
      message = failure.message
      if (failure.retryAfterSeconds !== undefined) reply.header('retry-after', String(failure.retryAfterSeconds))
    } else if (error instanceof IntegrityError) {
      statusCode = 502
      message = `${error.message}: the blob in storage is not the package the manifest describes; publish it again or fix sha256`
    }
    if (error.validation !== undefined) {
      statusCode = 400
      message = `invalid request ${error.validationContext ?? ''}: ${error.message}`
    }
    if (statusCode >= 500) {
      request.log.error({ err: error }, `${request.method} ${request.url} failed: ${message}`)
    } else {
      request.log.info({ statusCode }, `${request.method} ${request.url}: ${message}`)
    }
    if (statusCode === 500) message = 'internal error: see the server log'
    if (error.headers !== undefined) reply.headers(error.headers)
    // The error body must not be described by a download's headers, wherever they were set.
    for (const name of ['content-length', 'content-disposition', 'x-content-type-options', ...(statusCode === 416 ? [] : ['content-range'])]) {
      reply.removeHeader(name)
      if (!reply.raw.headersSent) reply.raw.removeHeader(name)
    }
    return reply.code(statusCode).type('application/json; charset=utf-8').send({
      statusCode,
      error: STATUS_CODES[statusCode] ?? 'Error',
      message
    })
  })

  fastify.setNotFoundHandler(function notFound (request, reply) {
    return reply.code(404).send({
      statusCode: 404,
      error: 'Not Found',
      message: `no route ${request.method} ${request.url.length > 200 ? `${request.url.slice(0, 200)}…` : request.url}; try GET /pkg for the package list`
    })
  })

  await fastify.register(healthRoutes)
  await fastify.register(metricsRoutes)
  await fastify.register(packageRoutes, { prefix: '/pkg' })
}

const appPlugin = fp(app, { name: 'pkg-serve', fastify: '5.x' })
export default appPlugin

/** Builds a ready-to-use app (no socket): for tests with inject, and for the servers that listen. */
export async function buildApp (opts: AppOptions, fastifyOptions: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const fastify = Fastify({ ...serverOptions, ...fastifyOptions })
  await fastify.register(appPlugin, opts)
  return fastify
}
