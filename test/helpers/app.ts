// Builds the app over a local-directory store for inject tests, closed after the test.

import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.ts'
import { createLocalStore } from '../../src/storage/local.ts'
import { tempDir } from './tmp.ts'

export interface LocalFixture {
  readonly app: FastifyInstance
  /** The container directory. */
  readonly dir: string
  /** The directory above it (outside the container). */
  readonly root: string
  put (path: string, data: string | Buffer): Promise<void>
}

export async function localApp (t: TestContext, files: Record<string, string | Buffer>, opts: { pollIntervalSeconds?: number } = {}): Promise<LocalFixture> {
  const root = await tempDir(t)
  const dir = join(root, 'pkg')
  await mkdir(dir)
  const put = async (path: string, data: string | Buffer): Promise<void> => {
    await mkdir(dirname(join(dir, path)), { recursive: true })
    await writeFile(join(dir, path), data)
  }
  for (const [path, data] of Object.entries(files)) await put(path, data)
  const app = await buildApp({
    store: createLocalStore(dir),
    manifestPath: 'packages.toml',
    pollIntervalSeconds: opts.pollIntervalSeconds ?? 0,
    retryMinMs: 50,
    retryMaxMs: 200
  })
  t.after(() => app.close())
  await app.ready()
  return { app, dir, root, put }
}
