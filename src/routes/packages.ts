// The package routes: listings, and GET/HEAD /pkg/:name/:tag streaming the blob the manifest
// names (any other method: 405 with Allow). A request can only ever reach a blob through a
// manifest entry (names are looked up in Maps, never joined into paths). A plain GET, or one
// range from a given byte, costs one storage request whose answer plans the reply; conditional
// requests, suffix ranges and HEAD look the blob up first. The body is the storage stream itself,
// never buffered (a small blob read once for several concurrent requests is held until each has
// it: shared-reads.ts); once its first byte is out, a failure breaks the connection.

import { basename } from 'node:path'
import type { Readable } from 'node:stream'
import contentDisposition from 'content-disposition'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod'
import mime from 'mime-types'
import { z } from 'zod'
import { storageFailure } from '../http/errors.ts'
import { whenEnded } from '../http/metrics.ts'
import { askableInOne, planResponse } from '../http/conditional.ts'
import type { Plan } from '../http/conditional.ts'
import type { Manifest, PackageEntry } from '../manifest/parse.ts'
import { IntegrityError } from '../storage/sha256.ts'
import { pipedInto } from '../storage/outlet.ts'
import { isStorageError } from '../storage/types.ts'
import type { BlobProperties, OpenedBlob } from '../storage/types.ts'

const GENERIC_TYPES = new Set(['application/octet-stream', 'binary/octet-stream', ''])
const RETRY_AFTER_SECONDS = 5

function show (name: string): string {
  return JSON.stringify(name.length > 130 ? `${name.slice(0, 128)}…` : name)
}

function listSome (items: readonly string[], max = 20): string {
  if (items.length === 0) return '(none)'
  const shown = items.slice(0, max).join(', ')
  return items.length > max ? `${shown}, … and ${items.length - max} more` : shown
}

function sorted<T> (values: Iterable<T>, key: (v: T) => string): T[] {
  return [...values].sort((a, b) => key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0)
}

function tagObjects (tags: ReadonlyMap<string, PackageEntry>) {
  return sorted(tags.values(), (e) => e.tag).map((e) => ({
    tag: e.tag,
    path: e.path,
    url: `/pkg/${encodeURIComponent(e.name)}/${encodeURIComponent(e.tag)}`
  }))
}

function contentTypeOf (entry: PackageEntry, blob: BlobProperties): string {
  if (entry.contentType !== undefined) return entry.contentType
  if (blob.contentType !== undefined && !GENERIC_TYPES.has(blob.contentType.toLowerCase())) return blob.contentType
  return mime.lookup(entry.path) || 'application/octet-stream'
}

/** RFC 6266 attachment: an ASCII-only filename= fallback, plus filename*= UTF-8 when the name needs it. */
function attachment (name: string): string {
  return contentDisposition(name, { fallback: name.replace(/[^\x20-\x7e]/g, '_') })
}

const nameParams = z.object({ name: z.string() })
const tagParams = z.object({ name: z.string(), tag: z.string() })

const packages: FastifyPluginAsyncZod = async function packages (fastify) {
  const { store, metrics, httpErrors } = fastify

  // Versions whose bytes did not match the manifest's sha256 (sha256 + ETag): a client resuming
  // one (wget retries with Range) would get the rest unchecked, so the rest is refused too.
  const corrupt = new Set<string>()
  const corruptKey = (entry: PackageEntry, etag: string): string => `${entry.sha256 ?? ''}\n${etag}`
  function refuseCorrupt (entry: PackageEntry, etag: string): void {
    if (entry.sha256 !== undefined && corrupt.has(corruptKey(entry, etag))) {
      throw new IntegrityError(`sha256 mismatch: the manifest says ${entry.sha256}, and storage sent other bytes for this version of the blob`)
    }
  }

  function requireManifest (reply: FastifyReply): Manifest {
    const current = fastify.manifests.manifest
    if (current !== undefined) return current
    const status = fastify.manifests.status()
    reply.header('retry-after', String(RETRY_AFTER_SECONDS))
    const why = status.lastError !== null ? `: ${status.lastError.message}` : ' (first load in progress)'
    throw httpErrors.serviceUnavailable(`no package manifest is loaded yet${why}; retry in ${RETRY_AFTER_SECONDS}s`)
  }

  function requirePackage (manifest: Manifest, name: string): ReadonlyMap<string, PackageEntry> {
    const tags = manifest.packages.get(name)
    if (tags === undefined) {
      throw httpErrors.notFound(`no package named ${show(name)}; packages: ${listSome(sorted(manifest.packages.keys(), (n) => n))}`)
    }
    return tags
  }

  function findEntry (reply: FastifyReply, name: string, tag: string): PackageEntry {
    const tags = requirePackage(requireManifest(reply), name)
    const entry = tags.get(tag)
    if (entry === undefined) {
      throw httpErrors.notFound(`package ${show(name)} has no tag ${show(tag)}; its tags: ${listSome(sorted(tags.keys(), (t) => t))}`)
    }
    return entry
  }

  fastify.get('/', async (_request, reply) => {
    const manifest = requireManifest(reply)
    return {
      packages: sorted(manifest.packages.entries(), ([name]) => name)
        .map(([name, tags]) => ({ name, tags: tagObjects(tags) }))
    }
  })

  fastify.get('/:name', { schema: { params: nameParams } }, async (request, reply) => {
    const { name } = request.params
    const tags = requirePackage(requireManifest(reply), name)
    return { name, tags: tagObjects(tags) }
  })

  /** The headers of a download (200 or 206) of `blob`; returns the body's length. */
  function downloadHeaders (reply: FastifyReply, entry: PackageEntry, blob: BlobProperties, plan: Plan): number {
    reply.code(200).removeHeader('content-range')
    reply.headers({
      etag: blob.etag,
      'last-modified': blob.lastModified.toUTCString(),
      'cache-control': 'no-cache',
      'accept-ranges': 'bytes',
      'content-type': contentTypeOf(entry, blob),
      'content-disposition': attachment(entry.filename ?? basename(entry.path)),
      'x-content-type-options': 'nosniff'
    })
    let length = blob.size
    if (plan.status === 206) {
      length = plan.end - plan.start + 1
      reply.code(206).header('content-range', `bytes ${plan.start}-${plan.end}/${blob.size}`)
    }
    reply.header('content-length', String(length))
    return length
  }

  /** Streams a checked storage body; once bytes are out, a failure breaks the connection. */
  function stream (request: FastifyRequest, reply: FastifyReply, body: Readable, length: number, entry: PackageEntry, etag: string, context: string): FastifyReply {
    body.once('error', (err: Error) => {
      if (err instanceof IntegrityError) {
        if (corrupt.size >= 1024) corrupt.clear()
        corrupt.add(corruptKey(entry, etag))
      }
      // A client that hung up is an aborted download (counted on 'close'), not a storage error.
      if (reply.raw.destroyed && !reply.raw.writableFinished && err.name !== 'IntegrityError' && !isStorageError(err)) {
        request.log.info({ blob: entry.path }, `download of ${context} ended: the client hung up`)
        return
      }
      const integrity = err.name === 'IntegrityError'
      metrics.storageErrors.inc({ kind: integrity ? 'integrity' : 'interrupted' })
      request.log[integrity ? 'error' : 'warn']({ blob: entry.path, error: err.message }, `download of ${context} broken: ${err.message}`)
    })
    // A client that left while storage was being asked (its socket already closed) is counted at
    // once. Fastify destroys the body it can no longer send.
    whenEnded(reply.raw, (finished) => {
      metrics.downloads.inc({ result: finished ? 'complete' : 'aborted' })
      if (!finished) return
      metrics.bytesServed.inc(length)
      // Storage connections that broke and were read on from the next byte: worth knowing.
      const resumes = 'resumes' in body ? body.resumes : undefined
      if (typeof resumes === 'number' && resumes > 0) request.log.info({ blob: entry.path, resumes }, `download of ${context} complete after ${resumes} storage read(s) resumed mid-body`)
    })
    // Fastify pipes a stream straight into the response (no onSend hook here changes the
    // payload): a body from storage batches its writes, and a parallel read lends it its
    // read-ahead instead of copying it out.
    pipedInto(body, reply.raw, request.raw.socket)
    return reply.send(body)
  }

  /**
   * One storage request for the whole answer: a plain GET, or one byte range from a given
   * position, goes to storage as it is, and the reply is planned from storage's answer (size,
   * ETag, type, dates). False when the answer it gets is not the one to send (an empty blob,
   * a range past the end): the caller then looks the blob up first.
   */
  async function serveInOne (request: FastifyRequest, reply: FastifyReply, entry: PackageEntry, context: string, ask: { start?: number, end?: number }): Promise<boolean> {
    const open = store.open
    if (open === undefined) return false
    const whole = ask.start === undefined
    let opened: OpenedBlob
    try {
      opened = await open.call(store, entry.path, { ...ask, ...(whole && entry.sha256 !== undefined && { sha256: entry.sha256 }) })
    } catch (err) {
      if (isStorageError(err) && err.status === 416) return false
      throw toHttpError(err, context)
    }
    try {
      refuseCorrupt(entry, opened.props.etag)
    } catch (err) {
      opened.body.destroy()
      throw toHttpError(err, context)
    }
    const plan = planResponse(request.headers, opened.props)
    const same = plan.status === 200
      ? whole && opened.start === 0 && opened.end === opened.props.size - 1
      : plan.status === 206 && !whole && plan.start === opened.start && plan.end === opened.end
    if (!same) {
      opened.body.destroy()
      return false
    }
    const length = downloadHeaders(reply, entry, opened.props, plan)
    // Not the reply itself: it is a thenable, which an async function would wait for.
    stream(request, reply, opened.body, length, entry, opened.props.etag, context)
    return true
  }

  fastify.route({
    method: ['GET', 'HEAD'],
    url: '/:name/:tag',
    exposeHeadRoute: false,
    schema: { params: tagParams },
    async handler (request, reply) {
      const { name, tag } = request.params
      const entry = findEntry(reply, name, tag)
      const context = `[${entry.name}.${entry.tag}] (blob "${entry.path}")`

      const ask = request.method === 'GET' ? askableInOne(request.headers) : undefined
      if (ask !== undefined && await serveInOne(request, reply, entry, context, ask)) return reply

      // Looked up, then read pinned to that ETag; if the blob is replaced in between, look again once.
      for (let attempt = 0; ; attempt++) {
        // A second look starts clean: nothing of the first attempt's answer may carry over.
        reply.code(200).removeHeader('content-range')
        let blob: BlobProperties
        try {
          blob = await store.stat(entry.path)
        } catch (err) {
          throw toHttpError(err, context)
        }

        if (request.method === 'GET') refuseCorrupt(entry, blob.etag)
        const plan = planResponse(request.headers, blob)
        if (plan.status === 304) {
          reply.headers({ etag: blob.etag, 'last-modified': blob.lastModified.toUTCString(), 'cache-control': 'no-cache', 'accept-ranges': 'bytes' })
          return reply.code(304).send()
        }
        if (plan.status === 416) {
          reply.headers({ etag: blob.etag, 'last-modified': blob.lastModified.toUTCString(), 'accept-ranges': 'bytes' })
          reply.header('content-range', `bytes */${blob.size}`)
          throw httpErrors.rangeNotSatisfiable(`range ${request.headers.range ?? ''} is outside ${context}, which is ${blob.size} bytes`)
        }
        const length = downloadHeaders(reply, entry, blob, plan)
        if (request.method === 'HEAD') return reply.send()

        let body: Readable
        try {
          body = await store.read(entry.path, {
            etag: blob.etag,
            size: blob.size,
            ...(plan.status === 206 && { start: plan.start, end: plan.end }),
            // Only a whole blob can be checked against the manifest's digest.
            ...(plan.status === 200 && entry.sha256 !== undefined && { sha256: entry.sha256 })
          })
        } catch (err) {
          if (attempt === 0 && isStorageError(err) && err.kind === 'changed') continue
          throw toHttpError(err, context)
        }
        return stream(request, reply, body, length, entry, blob.etag, context)
      }
    }
  })

  // Packages are read-only here: anything but GET and HEAD is 405 with the methods that work,
  // refused on arrival (onRequest): a body (a PUT of a file, a POST of a form) is never parsed,
  // so its type or size cannot turn the answer into a 415, 400 or 413.
  const notAllowed = async (request: FastifyRequest): Promise<never> => {
    throw httpErrors.createError(405, `${request.method} is not allowed on a package: use GET or HEAD`, { headers: { allow: 'GET, HEAD' } })
  }
  fastify.route({
    method: ['DELETE', 'OPTIONS', 'PATCH', 'POST', 'PUT'],
    url: '/:name/:tag',
    onRequest: notAllowed,
    handler: notAllowed
  })

  function toHttpError (err: unknown, context: string): Error {
    if (!isStorageError(err)) {
      // A small blob read whole before answering fails its sha256 check here, not mid-stream.
      if (err instanceof IntegrityError) metrics.storageErrors.inc({ kind: 'integrity' })
      return err instanceof Error ? err : new Error(String(err))
    }
    metrics.storageErrors.inc({ kind: err.kind })
    const failure = storageFailure(err, context)
    return httpErrors.createError(failure.statusCode, failure.message, {
      ...(failure.retryAfterSeconds !== undefined && { headers: { 'retry-after': String(failure.retryAfterSeconds) } })
    })
  }
}

export default packages
