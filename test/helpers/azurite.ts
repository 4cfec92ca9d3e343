// A real Azurite blob service for one test file, stopped afterwards. Seeds go through
// @azure/storage-blob, as a user's uploads would.

import type { TestContext } from 'node:test'
import { BlobServiceClient } from '@azure/storage-blob'
import type { ContainerClient } from '@azure/storage-blob'
import { spawnAzurite } from '../../scripts/azurite.ts'
import type { AzuriteProcess } from '../../scripts/azurite.ts'

export { AZURITE_ACCOUNT, AZURITE_KEY, connectionStringFor } from '../../scripts/azurite.ts'

export interface Azurite extends AzuriteProcess {
  readonly service: BlobServiceClient
  container (name?: string): Promise<ContainerClient>
}

export async function startAzurite (t?: TestContext): Promise<Azurite> {
  const azurite = await spawnAzurite()
  t?.after(() => azurite.stop())
  const service = BlobServiceClient.fromConnectionString(azurite.connectionString)
  return {
    ...azurite,
    service,
    async container (name = 'pkg') {
      const c = service.getContainerClient(name)
      await c.createIfNotExists()
      return c
    }
  }
}
