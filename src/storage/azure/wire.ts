// A small HTTP/1.1 client for the download path: HEAD and GET over kept-alive connections, and
// nothing else. Why not node:http: its client copies every body chunk out of the parser into a
// new Buffer, and at hundreds of MB/s that allocation churn (and the garbage collector behind
// it) costs several times more CPU than moving the bytes. Here each connection reads into one
// buffer of its own (`onread`), and a body written into an HTTP response refills that buffer
// only once the kernel has taken the previous bytes: no allocation per chunk, and backpressure
// from the client reaches the storage connection directly.
//
// Responses are framed only by Content-Length (what Blob Storage sends for HEAD and GET); any
// other framing is refused, never guessed. A connection that closes before answering a request it
// was reused for (the server's idle close racing our request) is retried once on a new one.
// Through a proxy (see proxy.ts), https goes through a CONNECT tunnel and http is forwarded.

import { OutgoingMessage } from 'node:http'
import { isIP, connect as netConnect } from 'node:net'
import type { Socket } from 'node:net'
import { Readable } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import type { TLSSocket } from 'node:tls'
import type { ProxyTarget } from './proxy.ts'
import { StorageError } from '../types.ts'
import { bracketHost } from '../../lib/net.ts'

/** Bytes each connection reads at a time (one buffer per connection, reused). */
const READ_BUFFER_BYTES = 256 * 1024
/** The most a response's status line and headers may weigh. */
const MAX_HEAD_BYTES = 64 * 1024
const MAX_IDLE_CONNECTIONS = 64
/** How long an idle connection is kept when the server does not say (Keep-Alive: timeout=N). */
const DEFAULT_IDLE_KEEP_MS = 30_000
const CRLFCRLF = Buffer.from('\r\n\r\n')

export interface WireTarget {
  readonly protocol: 'http:' | 'https:'
  readonly hostname: string
  readonly port: number
  /** The proxy to reach it through, if any. */
  readonly proxy?: ProxyTarget | undefined
}

export interface WireOptions {
  /** Bound on the wait for a response's headers (connecting included). */
  readonly requestTimeoutMs: number
  /** A body that receives nothing for this long while its reader wants data is broken. */
  readonly idleTimeoutMs: number
}

export interface WireRequest {
  readonly method: 'GET' | 'HEAD'
  /** Path and query, already encoded. */
  readonly path: string
  readonly headers: Readonly<Record<string, string>>
  /** What is being fetched, for messages (never a secret). */
  readonly what: string
  /** Checks the whole body before its last bytes are released (see BodyCheck). */
  readonly check?: BodyCheck
}

/** Sees every byte of a body; `verify` runs before the last bytes reach the reader. */
export interface BodyCheck {
  update (chunk: Buffer): void
  /** An error fails the body before its last chunk is released. */
  verify (): Error | undefined
}

export interface WireResponse {
  readonly status: number
  /** Lower-case names; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>
  /** The body, for a GET answered with one; the caller must consume or destroy it. */
  readonly body: WireBody | undefined
}

/** An error of the connection itself, with a Node-style code (ECONNRESET, ETIMEDOUT, …). */
function wireError (message: string, code: string): Error {
  return Object.assign(new Error(message), { code })
}

type Deliver = (chunk: Buffer, reused: boolean) => boolean

class Connection {
  readonly socket: Socket | TLSSocket
  /** Responses fully read on this connection. */
  served = 0
  /** False once the connection is out of step or the server asked to close it. */
  reusable = true
  /** How long the server lets it sit idle (its Keep-Alive: timeout, less a second). */
  idleKeepMs = DEFAULT_IDLE_KEEP_MS
  /** Called once the connection has closed, whoever closed it. */
  onGone: ((conn: Connection) => void) | undefined
  #deliver: Deliver | undefined
  #onClose: ((err: Error) => void) | undefined
  #error: Error | undefined

  /** `tunnel`: an open CONNECT tunnel through a proxy, for https. */
  constructor (target: WireTarget, tunnel?: Socket) {
    if (target.protocol === 'https:') {
      // No shared buffer under TLS: Node decrypts a whole batch of records into it in one go,
      // even once reading is paused, which would overwrite bytes still waiting to be written.
      // Each chunk is a Buffer of its own instead. (SNI names a host, never an IP address.)
      // Through a tunnel, `host` is what the certificate is checked against (not the proxy's name).
      const where = tunnel !== undefined ? { socket: tunnel, host: target.hostname } : { host: target.hostname, port: target.port }
      this.socket = tlsConnect({ ...where, ALPNProtocols: ['http/1.1'], ...(isIP(target.hostname) === 0 && { servername: target.hostname }) })
      this.socket.on('data', (chunk: Buffer) => { if (!this.#take(chunk, false)) this.socket.pause() })
    } else {
      // Plain HTTP through a proxy: the connection is to the proxy (requests name the host in full).
      const to = target.proxy ?? target
      const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES)
      const onread = { buffer, callback: (n: number, buf: Buffer): boolean => this.#take(buf.subarray(0, n), true) }
      this.socket = netConnect({ host: to.hostname, port: to.port, onread })
    }
    this.socket.setNoDelay(true)
    this.socket.setKeepAlive(true, 30_000)
    // Only ever armed while the connection sits in the pool (see Pool.give).
    this.socket.on('timeout', () => { this.destroy() })
    this.socket.on('error', (err) => { this.#error = err })
    this.socket.on('close', () => {
      this.reusable = false
      const onClose = this.#onClose
      this.#onClose = undefined
      this.#deliver = undefined
      onClose?.(this.#error ?? wireError('storage closed the connection', 'ECONNRESET'))
      this.onGone?.(this)
    })
  }

  get alive (): boolean { return this.reusable && !this.socket.destroyed }

  /** Hands the connection's incoming bytes to `deliver` (false from it pauses reading). */
  attach (deliver: Deliver, onClose: (err: Error) => void): void {
    this.#deliver = deliver
    this.#onClose = onClose
    this.socket.resume()
  }

  /** Idle: any byte now is out of step, and a close just removes it from the pool. */
  detach (): void {
    this.#deliver = undefined
    this.#onClose = undefined
    this.socket.resume()
  }

  pause (): void { this.socket.pause() }
  resume (): void { this.socket.resume() }
  destroy (): void {
    this.reusable = false
    this.socket.destroy()
  }

  #take (chunk: Buffer, reused: boolean): boolean {
    const deliver = this.#deliver
    if (deliver === undefined) {
      this.destroy()
      return false
    }
    // A reader that gave the connection back (or a new one that took it) wants it read on:
    // an idle connection must notice the server closing it, or stray bytes.
    return deliver(chunk, reused) || (this.#deliver !== deliver && !this.socket.destroyed)
  }
}

/** The host as a URL or Host header writes it (an IPv6 literal in brackets). */
function hostName (target: WireTarget): string {
  return bracketHost(target.hostname)
}

function proxyAuthorization (proxy: ProxyTarget): string {
  return proxy.auth !== undefined ? `proxy-authorization: Basic ${Buffer.from(proxy.auth).toString('base64')}\r\n` : ''
}

/** Asks the proxy for a tunnel to the target (HTTP CONNECT); resolves with the open socket. */
function openTunnel (target: WireTarget, proxy: ProxyTarget, timeoutMs: number): Promise<Socket> {
  const to = `${hostName(target)}:${target.port}`
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: proxy.hostname, port: proxy.port })
    let received = ''
    const fail = (err: Error): void => {
      clearTimeout(timer)
      socket.destroy()
      reject(err)
    }
    const onError = (err: Error & { code?: string }): void => {
      fail(Object.assign(new Error(`proxy ${proxy.shown}: ${err.message}`), { code: err.code ?? 'ECONNRESET' }))
    }
    const onClose = (): void => { onError(new Error('closed the connection before opening a tunnel')) }
    const onData = (chunk: Buffer): void => {
      received += chunk.toString('latin1')
      const end = received.indexOf('\r\n\r\n')
      if (end < 0) {
        if (received.length > MAX_HEAD_BYTES) fail(wireError(`proxy ${proxy.shown} sent over ${MAX_HEAD_BYTES} bytes of headers`, 'EPROTO'))
        return
      }
      socket.off('data', onData).off('error', onError).off('close', onClose)
      socket.pause()
      // Errors from here on surface on the TLS socket built over this one.
      socket.on('error', () => {})
      clearTimeout(timer)
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(received)?.[1]
      if (status !== '200') {
        // Not storage refusing our identity: the way to storage is closed.
        const why = status === undefined ? 'not an HTTP answer' : status === '407' ? 'HTTP 407: give the proxy\'s user:password@ in HTTPS_PROXY' : `HTTP ${status}`
        fail(new StorageError('unreachable', `proxy ${proxy.shown} refused a tunnel to ${to} (${why})`))
        return
      }
      resolve(socket)
    }
    const timer = setTimeout(() => {
      fail(new StorageError('timeout', `proxy ${proxy.shown} did not open a tunnel to ${to} within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.on('data', onData).on('error', onError).on('close', onClose)
    socket.write(`CONNECT ${to} HTTP/1.1\r\nhost: ${to}\r\n${proxyAuthorization(proxy)}\r\n`)
  })
}

/** One host's connections: idle ones kept (newest first) for the next request. */
class Pool {
  readonly #target: WireTarget
  readonly #timeoutMs: number
  readonly #idle: Connection[] = []

  constructor (target: WireTarget, timeoutMs: number) {
    this.#target = target
    this.#timeoutMs = timeoutMs
  }

  async take (): Promise<{ conn: Connection, reused: boolean }> {
    for (let conn = this.#idle.pop(); conn !== undefined; conn = this.#idle.pop()) {
      if (conn.alive) {
        conn.socket.setTimeout(0)
        return { conn, reused: true }
      }
    }
    return { conn: await this.fresh(), reused: false }
  }

  /** A new connection (for a request that must not land on a kept one). */
  async fresh (timeoutMs = this.#timeoutMs): Promise<Connection> {
    const target = this.#target
    const tunnel = target.protocol === 'https:' && target.proxy !== undefined
      ? await openTunnel(target, target.proxy, timeoutMs)
      : undefined
    const conn = new Connection(target, tunnel)
    conn.onGone = (gone) => {
      const at = this.#idle.indexOf(gone)
      if (at >= 0) this.#idle.splice(at, 1)
    }
    return conn
  }

  /** Keeps a connection whose last response was read whole, or closes it. */
  give (conn: Connection, keepAliveHeader: string | undefined): void {
    const timeout = /timeout=(\d+)/i.exec(keepAliveHeader ?? '')?.[1]
    // Close ours a second before the server would close its end.
    if (timeout !== undefined) conn.idleKeepMs = Math.min(DEFAULT_IDLE_KEEP_MS, Math.max(1, Number(timeout) - 1) * 1000)
    if (!conn.alive || this.#idle.length >= MAX_IDLE_CONNECTIONS) {
      conn.destroy()
      return
    }
    conn.served++
    conn.detach()
    conn.socket.setTimeout(conn.idleKeepMs)
    this.#idle.push(conn)
  }

  close (): void {
    for (const conn of this.#idle.splice(0)) conn.destroy()
  }
}

function parseHead (head: string): { status: number, headers: Record<string, string> } {
  const lines = head.split('\r\n')
  const statusLine = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0] ?? '')
  if (statusLine?.[1] === undefined) throw wireError('storage sent a response that is not HTTP/1.1', 'EPROTO')
  const headers: Record<string, string> = {}
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] ?? ''
    const colon = line.indexOf(':')
    if (colon <= 0) throw wireError('storage sent a malformed response header', 'EPROTO')
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
  }
  return { status: Number(statusLine[1]), headers }
}

function requestHead (target: WireTarget, request: WireRequest): string {
  const defaultPort = target.protocol === 'https:' ? 443 : 80
  const host = target.port === defaultPort ? hostName(target) : `${hostName(target)}:${target.port}`
  // Plain HTTP through a proxy names the whole URL (and authenticates to the proxy).
  const forwardTo = target.protocol === 'http:' ? target.proxy : undefined
  const requestTarget = forwardTo !== undefined ? `http://${host}${request.path}` : request.path
  let head = `${request.method} ${requestTarget} HTTP/1.1\r\nhost: ${host}\r\n`
  if (forwardTo !== undefined) head += proxyAuthorization(forwardTo)
  for (const [name, value] of Object.entries(request.headers)) {
    if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) throw wireError(`header ${JSON.stringify(name)} holds a line break`, 'ERR_INVALID_CHAR')
    head += `${name}: ${value}\r\n`
  }
  return `${head}\r\n`
}

export interface Wire {
  send (request: WireRequest): Promise<WireResponse>
  /** Closes the idle connections (bodies being read keep theirs until they end). */
  close (): void
}

export function createWire (target: WireTarget, options: WireOptions): Wire {
  const pool = new Pool(target, options.requestTimeoutMs)

  /** One request on one connection, up to its response's headers, by `deadline` (a Date.now() time). */
  function exchange (conn: Connection, request: WireRequest, head: string, deadline: number): Promise<WireResponse> {
    return new Promise<WireResponse>((resolve, reject) => {
      let received: Buffer = Buffer.alloc(0)
      let settled = false
      const fail = (err: Error): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        conn.destroy()
        reject(err)
      }
      const timer = setTimeout(() => {
        fail(new StorageError('timeout', `storage did not answer within ${options.requestTimeoutMs} ms for ${request.what}`))
      }, Math.max(1, deadline - Date.now()))

      conn.attach((chunk) => {
        // Copied: the connection's buffer is refilled by the next read.
        const searchFrom = Math.max(0, received.length - 3)
        received = Buffer.concat([received, chunk])
        const end = received.indexOf(CRLFCRLF, searchFrom)
        if (end > MAX_HEAD_BYTES || (end < 0 && received.length > MAX_HEAD_BYTES)) {
          fail(wireError(`storage sent over ${MAX_HEAD_BYTES} bytes of headers`, 'EPROTO'))
          return false
        }
        if (end < 0) return !settled
        let parsed: ReturnType<typeof parseHead>
        try {
          parsed = parseHead(received.subarray(0, end).toString('latin1'))
        } catch (err) {
          fail(err as Error)
          return false
        }
        settled = true
        clearTimeout(timer)
        const { status, headers } = parsed
        const rest = received.subarray(end + CRLFCRLF.length)
        if (/\bclose\b/i.test(headers.connection ?? '')) conn.reusable = false
        const bodiless = request.method === 'HEAD' || status === 204 || status === 304 || status < 200
        const length = headers['content-length']
        if (bodiless) {
          if (rest.length > 0) conn.reusable = false
          pool.give(conn, headers['keep-alive'])
          resolve({ status, headers, body: undefined })
          return true
        }
        if (headers['transfer-encoding'] !== undefined || length === undefined || !/^\d+$/.test(length)) {
          // Not framed the way Blob Storage frames a blob: the caller gets the status, never the bytes.
          conn.destroy()
          resolve({ status, headers, body: undefined })
          return false
        }
        const body = new WireBody({
          conn,
          length: Number(length),
          first: rest,
          what: request.what,
          idleTimeoutMs: options.idleTimeoutMs,
          check: request.check,
          release: () => { pool.give(conn, headers['keep-alive']) }
        })
        resolve({ status, headers, body })
        return body.released // a body still to come waits for its reader
      }, (err) => {
        fail(received.length === 0 && conn.served > 0
          ? Object.assign(err, { stale: true })
          : err)
      })
      conn.socket.write(head)
    })
  }

  return {
    async send (request) {
      const head = requestHead(target, request)
      // One bound for the whole attempt: a tunnel through a proxy, then the answer's headers.
      const deadline = Date.now() + options.requestTimeoutMs
      const first = await pool.take()
      try {
        return await exchange(first.conn, request, head, deadline)
      } catch (err) {
        // A kept connection the server closed as we reused it: the request never reached it.
        // Again on a new connection: the other kept ones may be just as stale.
        if (!first.reused || (err as { stale?: boolean }).stale !== true) throw err
        const again = Date.now() + options.requestTimeoutMs
        return await exchange(await pool.fresh(options.requestTimeoutMs), request, head, again)
      }
    },
    close () { pool.close() }
  }
}

interface WireBodyOptions {
  readonly conn: Connection
  readonly length: number
  /** Bytes of the body that came with the headers (a copy). */
  readonly first: Buffer
  readonly what: string
  readonly idleTimeoutMs: number
  readonly check: BodyCheck | undefined
  /** Gives the connection back once every byte of the body is read and written on. */
  readonly release: () => void
}

/**
 * A response body of known length. Read as a stream, each chunk is a copy. Piped into an HTTP
 * response, the bytes go from the connection's own buffer straight to the response's socket:
 * the next read waits until the kernel has taken the previous bytes (or the client's
 * backpressure holds it), so a blob is never buffered and nothing is allocated per chunk.
 */
export class WireBody extends Readable {
  readonly contentLength: number
  readonly #conn: Connection
  readonly #what: string
  readonly #check: BodyCheck | undefined
  readonly #release: () => void
  /** Armed while the body still needs its connection. */
  readonly #watchdog: NodeJS.Timeout | undefined
  #remaining: number
  #first: Buffer | undefined
  #mode: 'unset' | 'stream' | 'direct' = 'unset'
  #dest: OutgoingMessage | undefined
  /** True while the body waits on storage (not held back by its reader). */
  #waiting = false
  #lastByteAt = Date.now()
  /** Every byte has arrived. */
  #done = false
  /** The connection is given back (or was never needed). */
  #released = false
  /** A failure found before anyone read: raised when the reader comes. */
  #failure: Error | undefined

  constructor (options: WireBodyOptions) {
    super({ highWaterMark: READ_BUFFER_BYTES })
    this.contentLength = options.length
    this.#conn = options.conn
    this.#what = options.what
    this.#check = options.check
    this.#release = options.release
    this.#remaining = options.length
    this.#first = options.first.length > 0 ? options.first : undefined
    const first = this.#first ?? Buffer.alloc(0)
    if (first.length >= this.contentLength) {
      // Whole already (a small blob): the connection can go back at once.
      if (first.length > this.contentLength) options.conn.reusable = false
      this.#first = first.subarray(0, this.contentLength)
      this.#remaining = 0
      this.#done = true
      this.#check?.update(this.#first)
      this.#failure = this.#check?.verify()
      this.#giveBack()
      return
    }
    options.conn.attach((chunk, reused) => this.#accept(chunk, reused), (err) => {
      if (!this.#done) this.destroy(this.#broken(err))
    })
    options.conn.pause()
    const idleMs = options.idleTimeoutMs
    this.#watchdog = setInterval(() => {
      // A reader that never came, or storage that stopped sending while the reader waits.
      const stalled = this.#mode === 'unset' || this.#waiting
      if (stalled && Date.now() - this.#lastByteAt > idleMs) {
        this.destroy(new StorageError('timeout', `storage sent nothing for ${Math.round(idleMs / 1000)} s while streaming ${this.#what}`))
      }
    }, Math.min(1000, Math.max(50, idleMs / 4)))
    this.#watchdog.unref()
  }

  /** Whether the connection is no longer this body's (its reads can go on). */
  get released (): boolean { return this.#released }

  #giveBack (): void {
    if (this.#released) return
    this.#released = true
    this.#waiting = false
    clearInterval(this.#watchdog)
    this.#release()
  }

  #broken (err: Error): StorageError {
    const code = (err as { code?: string }).code ?? 'ECONNRESET'
    return new StorageError('unreachable', `storage connection broke after ${this.contentLength - this.#remaining} of ${this.contentLength} bytes of ${this.#what}: ${err.message}`, { code, cause: err })
  }

  /** Raises a failure found before the reader came; true if there was one. */
  #raise (): boolean {
    if (this.#failure === undefined) return false
    this.destroy(this.#failure)
    return true
  }

  override _read (): void {
    if (this.#mode === 'direct') return
    this.#mode = 'stream'
    if (this.#raise()) return
    const first = this.#first
    if (first !== undefined) {
      this.#first = undefined
      if (this.#done) {
        if (first.length > 0) this.push(first)
        this.push(null)
        return
      }
      if (!this.#accept(first, false)) return
    }
    if (this.#done) { this.push(null); return }
    this.#resumeConn()
  }

  override pipe<T extends NodeJS.WritableStream> (destination: T, options?: { end?: boolean }): T {
    if (!(destination instanceof OutgoingMessage) || this.#mode !== 'unset' || options?.end === false) {
      return super.pipe(destination, options)
    }
    this.#mode = 'direct'
    this.#dest = destination
    destination.emit('pipe', this)
    if (this.#raise()) return destination
    const first = this.#first
    this.#first = undefined
    if (this.#done) {
      if (first !== undefined && first.length > 0) destination.write(first)
      this.#end()
      return destination
    }
    if (first === undefined || this.#accept(first, false)) this.#resumeConn()
    return destination
  }

  #resumeConn (): void {
    this.#waiting = true
    this.#lastByteAt = Date.now()
    this.#conn.resume()
  }

  /** Takes bytes from the connection; false pauses it. */
  #accept (data: Buffer, reused: boolean): boolean {
    if (this.destroyed) return false
    let chunk = data
    if (chunk.length > this.#remaining) {
      // More than the length said: the connection is out of step and cannot be reused.
      chunk = chunk.subarray(0, this.#remaining)
      this.#conn.reusable = false
    }
    this.#remaining -= chunk.length
    this.#lastByteAt = Date.now()
    const last = this.#remaining === 0
    if (this.#check !== undefined) {
      this.#check.update(chunk)
      const err = last ? this.#check.verify() : undefined
      if (err !== undefined) {
        this.destroy(err)
        return false
      }
    }
    if (last) this.#done = true

    if (this.#mode === 'direct') {
      const dest = this.#dest as OutgoingMessage
      let flushedNow = true
      dest.write(chunk, (err) => {
        if (flushedNow) return
        if (err !== undefined && err !== null) { this.destroy(err); return }
        this.#afterFlush(last)
      })
      // Taken by the kernel already (nothing left in the response's buffers): read on at once.
      // (Rare for a live ServerResponse, which corks its socket until the next tick; then the
      // write's callback lets the connection read on.)
      flushedNow = dest.writableLength === 0
      if (flushedNow) {
        if (last) this.#finish()
        return !last
      }
      this.#waiting = false
      return false
    }

    const more = this.push(reused ? Buffer.from(chunk) : chunk)
    if (last) {
      this.#finish()
      this.push(null)
      return false
    }
    if (!more) this.#waiting = false
    return more
  }

  #afterFlush (last: boolean): void {
    if (this.destroyed) return
    if (last) this.#finish()
    else this.#resumeConn()
  }

  /** Every byte is read (and, piped, written): the connection goes back, the response ends. */
  #finish (): void {
    this.#giveBack()
    if (this.#mode === 'direct') this.#end()
  }

  #end (): void {
    clearInterval(this.#watchdog)
    this.#dest?.end()
    this.push(null)
    this.resume() // no reader of our own: let 'end' (and 'close') fire
  }

  override _destroy (err: Error | null, callback: (error?: Error | null) => void): void {
    clearInterval(this.#watchdog)
    if (!this.#released) {
      this.#released = true
      this.#conn.destroy()
    }
    callback(err)
  }
}
