// Waits for a condition instead of a fixed time: the probe runs until it returns a value (not
// undefined), with a deadline that fails the test with what was awaited.

import { setTimeout as sleep } from 'node:timers/promises'

export async function until<T> (what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 10_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}
