// An HTTP(S) front of the test's own between pkg-serve and Azurite that forwards every request
// and, when told, answers the next ones wrongly: throttling statuses, a connection closed before
// the answer, a body cut mid-way, a length or Content-Range that lies, a range ignored. It
// records what pkg-serve asked storage for (method, Range, If-Match), to count requests.

import { once } from 'node:events'
import { createServer as createHttpServer, request as httpRequest } from 'node:http'
import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http'
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { TLSSocket } from 'node:tls'
import type { TestContext } from 'node:test'
import type { Certificate } from './azurite.ts'

export type Fault =
  /** Answer with this status (and x-ms-error-code, Retry-After), as Azure Storage does. */
  | { readonly kind: 'status', readonly status: number, readonly code?: string, readonly retryAfter?: string }
  /** Close the connection before any byte of the answer. */
  | { readonly kind: 'reset' }
  /** Forward the headers and this many bytes of the body, then reset the connection. */
  | { readonly kind: 'cut', readonly afterBytes: number }
  /** Announce Content-Length + delta, and send exactly that many bytes (padding with zeros). */
  | { readonly kind: 'length', readonly delta: number }
  /** Drop the request's x-ms-range: a ranged read answered with the whole blob. */
  | { readonly kind: 'whole' }
  /** Shift the answer's Content-Range by this many bytes (the bytes stay the same). */
  | { readonly kind: 'shift', readonly by: number }

export interface SeenRequest {
  readonly method: string
  /** The blob's path below the account (no query). */
  readonly path: string
  readonly range: string | undefined
  readonly ifMatch: string | undefined
  readonly fault: Fault['kind'] | undefined
}

export interface StorageFront {
  readonly port: number
  /** The blob endpoint through the front (same scheme as storage). */
  readonly blobEndpoint: string
  /** Applies `fault` to the next `times` requests with this method (and, if given, only ranged or unranged ones). */
  inject (method: 'GET' | 'HEAD', fault: Fault, times?: number, ranged?: boolean): void
  /** Drops the faults not yet applied. */
  clear (): void
  /** Requests for blobs seen so far (the manifest's too). */
  readonly seen: SeenRequest[]
}

/** Breaks a connection: a TCP reset, or over TLS (which cannot reset the socket under it) a close. */
function hangUp (socket: Socket): void {
  if (socket instanceof TLSSocket) socket.destroy()
  else socket.resetAndDestroy()
}

interface Rule { method: string, fault: Fault, times: number, ranged: boolean | undefined }

export async function startFront (t: TestContext, target: { port: number, blobEndpoint: string, certificate?: Certificate | undefined }): Promise<StorageFront> {
  const rules: Rule[] = []
  const seen: SeenRequest[] = []
  const sockets = new Set<Socket>()
  const tls = target.certificate
  const forwardRequest = tls !== undefined ? httpsRequest : httpRequest

  function take (req: IncomingMessage): Fault | undefined {
    const ranged = req.headers['x-ms-range'] !== undefined
    const rule = rules.find((r) => r.method === req.method && r.times > 0 && (r.ranged === undefined || r.ranged === ranged))
    if (rule === undefined) return undefined
    rule.times--
    return rule.fault
  }

  function answer (req: IncomingMessage, res: ServerResponse): void {
    const fault = take(req)
    seen.push({
      method: req.method ?? '',
      path: decodeURIComponent((req.url ?? '').replace(/\?.*$/s, '').split('/').slice(2).join('/')),
      range: req.headers['x-ms-range'] as string | undefined,
      ifMatch: req.headers['if-match'],
      fault: fault?.kind
    })
    if (fault?.kind === 'status') {
      res.writeHead(fault.status, {
        'x-ms-request-id': 'front',
        ...(fault.code !== undefined && { 'x-ms-error-code': fault.code }),
        ...(fault.retryAfter !== undefined && { 'retry-after': fault.retryAfter }),
        'content-length': '0'
      }).end()
      return
    }
    if (fault?.kind === 'reset') {
      hangUp(req.socket)
      return
    }
    const headers: Record<string, string | string[] | undefined> = { ...req.headers, host: `127.0.0.1:${target.port}` }
    if (fault?.kind === 'whole') delete headers['x-ms-range']
    const upstream = forwardRequest({
      host: '127.0.0.1',
      port: target.port,
      method: req.method,
      path: req.url,
      headers,
      ...(tls !== undefined && { ca: tls.cert })
    }, (up) => {
      const out: OutgoingHttpHeaders = { ...up.headers }
      const length = Number(up.headers['content-length'] ?? 0)
      let send = length
      if (fault?.kind === 'length') {
        send = Math.max(0, length + fault.delta)
        out['content-length'] = String(send)
      }
      if (fault?.kind === 'shift') {
        out['content-range'] = String(up.headers['content-range'] ?? '').replace(/^bytes (\d+)-(\d+)/, (_m, a: string, b: string) => `bytes ${Number(a) + fault.by}-${Number(b) + fault.by}`)
      }
      res.writeHead(up.statusCode ?? 502, out)
      if (req.method === 'HEAD') {
        up.resume()
        res.end()
        return
      }
      let sent = 0
      up.on('data', (chunk: Buffer) => {
        if (fault?.kind === 'cut' && sent + chunk.length >= fault.afterBytes) {
          res.write(chunk.subarray(0, fault.afterBytes - sent), () => { hangUp(req.socket) })
          sent = fault.afterBytes
          up.destroy()
          return
        }
        const part = chunk.subarray(0, Math.max(0, send - sent))
        sent += part.length
        if (part.length > 0 && !res.write(part)) {
          up.pause()
          res.once('drain', () => up.resume())
        }
      })
      up.on('end', () => {
        if (sent < send) res.write(Buffer.alloc(send - sent))
        res.end()
      })
    })
    upstream.on('error', () => { req.socket.destroy() })
    req.pipe(upstream)
  }

  const server: Server = tls !== undefined
    ? createHttpsServer({ cert: tls.cert, key: tls.key }, answer)
    : createHttpServer(answer)
  server.on(tls !== undefined ? 'secureConnection' : 'connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  const port = (server.address() as AddressInfo).port
  return {
    port,
    blobEndpoint: target.blobEndpoint.replace(/:\d+\//, `:${port}/`),
    inject (method, fault, times = 1, ranged) { rules.push({ method, fault, times, ranged }) },
    clear () { rules.length = 0 },
    seen
  }
}
