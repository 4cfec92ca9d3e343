// Breaks a storage stream that stops delivering while its reader wants data: a stalled storage
// connection must not hold a download (and the client behind it) forever. A reader that is slow
// (the stream paused by backpressure) is not a stall and is never cut.

import type { Readable } from 'node:stream'
import { StorageError } from './types.ts'

export function watchIdle (stream: Readable, idleMs: number, what: string): Readable {
  let last = Date.now()
  const touch = (): void => { last = Date.now() }
  stream.on('data', touch)
  stream.on('resume', touch)
  const timer = setInterval(() => {
    if (stream.isPaused() || stream.readableFlowing !== true) return
    if (Date.now() - last > idleMs) {
      stream.destroy(new StorageError('timeout', `storage sent nothing for ${Math.round(idleMs / 1000)} s while streaming ${what}`))
    }
  }, Math.min(1000, Math.max(50, idleMs / 4)))
  timer.unref()
  const stop = (): void => { clearInterval(timer) }
  stream.once('close', stop)
  stream.once('end', stop)
  stream.once('error', stop)
  return stream
}
