import { test } from 'node:test'
import assert from 'node:assert/strict'
import { backoffDelay, wait } from '../../src/lib/backoff.ts'

test('backoffDelay doubles from the first delay up to the cap', () => {
  const policy = { initialMs: 100, maxMs: 1000 }
  assert.deepEqual([0, 1, 2, 3, 4, 50, 10_000].map((n) => backoffDelay(policy, n)), [100, 200, 400, 800, 1000, 1000, 1000])
  assert.equal(backoffDelay({ ...policy, factor: 3 }, 2), 900)
  assert.equal(backoffDelay(policy, -1), 100)
})

test('jitter takes at most its share off each delay', () => {
  const policy = { initialMs: 100, maxMs: 1000, jitter: 0.2 }
  assert.equal(backoffDelay(policy, 1, () => 0), 200)
  assert.equal(backoffDelay(policy, 1, () => 0.999999), 200 * (1 - 0.2 * 0.999999))
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay({ initialMs: 100, maxMs: 1000, jitter: 1 }, 3)
    assert.ok(d >= 0 && d <= 800, String(d))
  }
})

test('wait ends at once when its signal aborts, with an AbortError', async () => {
  const controller = new AbortController()
  const started = Date.now()
  const waiting = wait(60_000, controller.signal)
  controller.abort(new Error('stopped'))
  await assert.rejects(waiting, (err: Error) => err.name === 'AbortError' && (err.cause as Error).message === 'stopped')
  assert.ok(Date.now() - started < 1000)
  await wait(1)
})
