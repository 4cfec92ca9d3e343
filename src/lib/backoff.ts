// One backoff policy for everything that waits and tries again (the manifest's first load, the
// launcher's --on-failure retry, publish's manifest conflicts, the local store's lock, storage
// throttling): exponential, capped, with jitter so that a fleet of nodes does not retry in
// lockstep, and waits that end at once when the caller is stopped.

import { setTimeout as sleep } from 'node:timers/promises'

export interface Backoff {
  /** The first delay, in milliseconds. */
  readonly initialMs: number
  /** The longest delay, in milliseconds. */
  readonly maxMs: number
  /** Growth per attempt (default 2). */
  readonly factor?: number
  /**
   * The share of each delay that is random, 0 to 1 (default 0): 0.2 waits 80–100% of the
   * computed delay, 1 anything from 0 to it ("full jitter").
   */
  readonly jitter?: number
}

/** The delay before retry number `attempt` (0 for the first retry), in milliseconds. */
export function backoffDelay (policy: Backoff, attempt: number, random: () => number = Math.random): number {
  const { initialMs, maxMs, factor = 2, jitter = 0 } = policy
  const exact = Math.min(maxMs, initialMs * factor ** Math.min(Math.max(0, attempt), 64))
  return exact * (1 - jitter * random())
}

/** Waits `ms`; rejects with an AbortError (the signal's reason as its cause) as soon as `signal` aborts. */
export function wait (ms: number, signal?: AbortSignal): Promise<void> {
  return sleep(ms, undefined, signal === undefined ? undefined : { signal })
}
