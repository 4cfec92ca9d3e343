// Binds the app to its addresses. `localhost` means 127.0.0.1 and ::1 explicitly, on the same
// port, whatever /etc/hosts or the container's resolver say: the node's script may resolve
// localhost to ::1 first. Where the host has no IPv6 loopback, IPv4 alone. This module owns
// the sockets' timeouts and closing; the app itself never listens.

import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { UserError, errnoCode } from '../lib/errors.ts'
import { bracketHost } from '../lib/net.ts'

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void

export interface ListenOptions {
  readonly host: string
  /** 0 picks a free port (the same one on every address). */
  readonly port: number
  /** Milliseconds a closing server waits for in-flight responses before cutting them. */
  readonly closeGraceMs?: number
  readonly log?: { info: (obj: object, msg: string) => void, warn: (obj: object, msg: string) => void }
  /** Overrides of serverTimeouts (tests). */
  readonly timeouts?: Partial<ServerTimeouts>
}

export interface Listener {
  readonly port: number
  readonly addresses: readonly string[]
  /** Stops accepting, lets in-flight responses finish (up to the grace period), then cuts the rest. */
  close (): Promise<void>
}

export interface ServerTimeouts {
  readonly headersTimeout: number
  readonly requestTimeout: number
  readonly keepAliveTimeout: number
  readonly socketTimeout: number
}

/** Socket limits: a slow or silent client cannot hold a connection (or a storage stream) forever. */
export const serverTimeouts: ServerTimeouts = {
  headersTimeout: 10_000,
  requestTimeout: 30_000,
  keepAliveTimeout: 5_000,
  /** Inactivity on an open socket (a client that stopped reading a download). */
  socketTimeout: 120_000
}

function makeServer (handler: RequestHandler, overrides: Partial<ServerTimeouts> = {}): Server {
  const t = { ...serverTimeouts, ...overrides }
  const server = createServer({
    requestTimeout: t.requestTimeout,
    headersTimeout: t.headersTimeout,
    // How often Node enforces the two limits above (its default, 30 s, would triple them).
    connectionsCheckingInterval: Math.min(1000, t.headersTimeout),
    maxHeaderSize: 16 * 1024,
    // A response queues up to this much before backpressure (Node's default: 16 KiB on Node 20,
    // 64 KiB on 24), so that the pieces a download receives from storage in one turn of the event
    // loop leave in one writev (storage/outlet.ts). Measured with 1 GiB over TLS on Node 24: one
    // read's CPU per GiB 1.06 at 128 KiB, 0.99 at 256, 0.93 at 1 MiB, whose queues took peak RSS
    // with 8 downloads from ~133 to ~200 MiB. It bounds each connection's read buffer too.
    highWaterMark: 256 * 1024
  }, handler)
  server.keepAliveTimeout = t.keepAliveTimeout
  server.setTimeout(t.socketTimeout, (socket) => socket.destroy())
  return server
}

function bind (server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => { reject(err) }
    server.once('error', onError)
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError)
      const address = server.address()
      resolve(typeof address === 'object' && address !== null ? address.port : port)
    })
  })
}

function closeServer (server: Server, graceMs: number): Promise<void> {
  if (!server.listening) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => { server.closeAllConnections() }, graceMs)
    timer.unref()
    server.close(() => { clearTimeout(timer); resolve() })
    server.closeIdleConnections()
  })
}

const ipv6Unavailable = new Set(['EADDRNOTAVAIL', 'EAFNOSUPPORT', 'EPROTONOSUPPORT'])

export async function listen (handler: RequestHandler, opts: ListenOptions): Promise<Listener> {
  const graceMs = opts.closeGraceMs ?? 10_000
  // Host names are case-insensitive: LOCALHOST is localhost too.
  const hosts = opts.host.toLowerCase() === 'localhost' ? ['127.0.0.1', '::1'] : [opts.host]

  for (let attempt = 0; ; attempt++) {
    const servers: Server[] = []
    const addresses: string[] = []
    let port = opts.port
    try {
      for (const host of hosts) {
        const server = makeServer(handler, opts.timeouts)
        try {
          port = await bind(server, host, port)
        } catch (err) {
          const code = errnoCode(err) ?? ''
          if (host === '::1' && addresses.length > 0 && ipv6Unavailable.has(code)) {
            opts.log?.warn({ code }, 'no IPv6 loopback on this host: listening on 127.0.0.1 only')
            continue
          }
          throw err
        }
        servers.push(server)
        addresses.push(host)
      }
    } catch (err) {
      await Promise.all(servers.map(async (s) => { await closeServer(s, 0) }))
      // A free IPv4 port may be taken on ::1: with port 0, pick another pair.
      if (opts.port === 0 && errnoCode(err) === 'EADDRINUSE' && attempt < 10) continue
      if (err instanceof Error && 'syscall' in err && err.syscall === 'getaddrinfo') {
        throw new UserError(`cannot listen on --host ${opts.host}: this host cannot resolve it (${errnoCode(err) ?? err.message}); give an IP address, localhost, or a name it resolves`, { cause: err })
      }
      throw err
    }
    opts.log?.info({ addresses, port }, `listening on ${addresses.map((a) => `${bracketHost(a)}:${port}`).join(' and ')}`)
    return {
      port,
      addresses,
      async close () {
        await Promise.all(servers.map(async (s) => { await closeServer(s, graceMs) }))
      }
    }
  }
}
