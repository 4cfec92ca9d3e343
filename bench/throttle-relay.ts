// A TCP relay in front of storage that lets each connection carry at most `bytesPerSecond` from
// storage to its client, as a real storage account does per connection. Bytes pass through
// untouched (TLS included); only their pace changes. For the bench's large-package figures, where
// reading one blob over several connections is what is being measured.

import { connect, createServer } from 'node:net'
import type { Socket } from 'node:net'

export interface ThrottleRelay {
  readonly port: number
  /** Connections opened so far. */
  readonly connections: number
  close (): Promise<void>
}

export async function startThrottleRelay (targetPort: number, bytesPerSecond: number, targetHost = '127.0.0.1'): Promise<ThrottleRelay> {
  const sockets = new Set<Socket>()
  let opened = 0
  const server = createServer((client) => {
    opened++
    const upstream = connect(targetPort, targetHost)
    sockets.add(client).add(upstream)
    const drop = (): void => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', drop).on('close', drop)
    upstream.on('error', drop).on('close', drop)
    client.pipe(upstream)
    // Each chunk books its time on the connection's clock; reading pauses while the clock is ahead.
    let clock = performance.now()
    upstream.on('data', (chunk: Buffer) => {
      const now = performance.now()
      clock = Math.max(clock, now) + (chunk.length / bytesPerSecond) * 1000
      const ahead = clock - now
      const writable = client.write(chunk)
      if (ahead > 5 || !writable) {
        upstream.pause()
        const resume = (): void => { if (!upstream.destroyed) upstream.resume() }
        const timer = setTimeout(() => { if (writable || client.writableLength === 0) resume(); else client.once('drain', resume) }, Math.max(0, ahead))
        timer.unref()
      }
    })
    upstream.on('end', () => { client.end() })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('the relay has no port')
  return {
    port: address.port,
    get connections () { return opened },
    close: () => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resolve())
    })
  }
}
