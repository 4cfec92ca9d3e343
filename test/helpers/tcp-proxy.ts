// A TCP proxy of the test's own between pkg-serve and Azurite, to cut, stall and refuse.

import { createServer, connect } from 'node:net'
import type { Server, Socket } from 'node:net'
import type { TestContext } from 'node:test'

export interface TcpProxy {
  readonly port: number
  /** Forward normally (and resume stalled connections). */
  forward (): void
  /** Keep connections open but pass no more bytes from storage. */
  stall (): void
  /** Reset every open connection. */
  cut (): void
  /** Reset connections once this many bytes went from storage to pkg-serve on one of them. */
  cutAfter (bytes: number): void
  /** Stop listening (connections are refused) and reset open ones. */
  down (): Promise<void>
  /** Listen again on the same port. */
  up (): Promise<void>
  readonly connections: number
  close (): Promise<void>
}

export async function startProxy (t: TestContext, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  let stalled = false
  let cutAt: number | undefined
  // Connections stalled with the bytes they hold back, delivered on forward().
  const paused = new Map<Socket, { client: Socket, held: Buffer[] }>()

  const onConnection = (client: Socket): void => {
    const upstream = connect(targetPort, '127.0.0.1')
    let fromStorage = 0
    sockets.add(client)
    sockets.add(upstream)
    const drop = (): void => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.on('data', (chunk: Buffer) => { upstream.write(chunk) })
    upstream.on('data', (chunk: Buffer) => {
      fromStorage += chunk.length
      if (cutAt !== undefined && fromStorage >= cutAt) {
        client.resetAndDestroy()
        drop()
        return
      }
      if (stalled) {
        upstream.pause()
        const entry = paused.get(upstream) ?? { client, held: [] }
        entry.held.push(chunk)
        paused.set(upstream, entry)
        return
      }
      if (!client.write(chunk)) upstream.pause()
    })
    client.on('drain', () => { if (!stalled) upstream.resume() })
  }

  let server: Server = createServer(onConnection)
  const listen = (port: number): Promise<number> => new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      const address = server.address()
      resolve(typeof address === 'object' && address !== null ? address.port : port)
    })
  })
  const port = await listen(0)
  const resetAll = (): void => {
    for (const s of sockets) s.resetAndDestroy()
    sockets.clear()
  }

  const proxy: TcpProxy = {
    port,
    forward () {
      stalled = false
      cutAt = undefined
      for (const [upstream, { client, held }] of paused) {
        for (const chunk of held) client.write(chunk)
        upstream.resume()
      }
      paused.clear()
    },
    stall () {
      stalled = true
      // Connections already paused by backpressure stay paused: their drain no longer resumes them.
    },
    cut: resetAll,
    cutAfter (bytes) { cutAt = bytes },
    async down () {
      resetAll()
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()))
    },
    async up () {
      if (server.listening) return
      server = createServer(onConnection)
      await listen(port)
    },
    get connections () { return sockets.size / 2 },
    async close () {
      await proxy.down()
    }
  }
  t.after(() => proxy.close())
  return proxy
}
