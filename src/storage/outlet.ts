// Where a download's body goes: the HTTP response it is piped straight into. The route tells the
// body (pipedInto); a body that knows its outlet hands it fewer, larger writes (batchWrites) and,
// for a parallel read, views of its read-ahead instead of copies (parallel-read.ts).

import type { Readable } from 'node:stream'

/**
 * Where a body's bytes are written (an HTTP response): its `writableLength` counts the bytes
 * written to it that are not yet handed to the kernel (its own queue, a pipelined response's
 * included, and its socket's); while corked, it queues what is written and sends it all at once
 * when uncorked.
 */
export interface Outlet {
  readonly writableLength: number
  /** Ended: end() has uncorked it for good. */
  readonly writableEnded: boolean
  on (event: 'drain' | 'finish' | 'close', listener: () => void): unknown
  off (event: 'drain' | 'finish' | 'close', listener: () => void): unknown
  cork (): void
  uncork (): void
}

/**
 * The connection under the outlet (the request's socket): once destroyed, its descriptor is
 * closed and nothing queued on it is ever sent.
 */
export interface Connection {
  readonly destroyed: boolean
  on (event: 'close', listener: () => void): unknown
  off (event: 'close', listener: () => void): unknown
}

type OnPiped = (outlet: Outlet, connection: Connection) => void

const onPiped = new WeakMap<Readable, OnPiped>()

/** What a body does once it learns where it is piped (at most once). */
export function whenPiped (body: Readable, listener: OnPiped): void {
  onPiped.set(body, listener)
}

/**
 * Tells a body that it is piped straight into `outlet`, over `connection`: nothing between them
 * copies, holds or reorders its bytes. A stream that did not ask (whenPiped) is left as it is.
 */
export function pipedInto (body: Readable, outlet: Outlet, connection: Connection): void {
  const listener = onPiped.get(body)
  onPiped.delete(body)
  listener?.(outlet, connection)
}

/**
 * A body calls the function this returns before each piece it pushes: the first piece in a turn
 * of the event loop corks the outlet, and the end of the turn (setImmediate) uncorks it, so every
 * piece pushed in one turn leaves in one writev instead of a write each. Storage over TLS arrives
 * in 16 KiB records, several per turn; a syscall for each was a quarter of the process's CPU. The
 * server's high-water mark (src/http/listen.ts) sets how much one turn may queue before
 * backpressure. A response ended in the turn was uncorked by end() itself: not again.
 */
export function batchWrites (outlet: Outlet): () => void {
  let corked = false
  const flush = (): void => {
    corked = false
    if (!outlet.writableEnded) outlet.uncork()
  }
  return () => {
    if (corked) return
    corked = true
    outlet.cork()
    setImmediate(flush)
  }
}
