import { test } from 'node:test'
import assert from 'node:assert/strict'
import { chmod, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ManagedIdentityCredential, WorkloadIdentityCredential, DefaultAzureCredential } from '@azure/identity'
import { chooseCredential, readKubeletClientId } from '../../../src/storage/azure/credentials.ts'
import { tempDir } from '../../helpers/tmp.ts'

const KUBELET = '11111111-2222-3333-4444-555555555555'

test('credentials are chosen in the documented order, and never described with a secret', async (t) => {
  const dir = await tempDir(t)
  const azureJson = join(dir, 'azure.json')
  await writeFile(azureJson, JSON.stringify({ aadClientSecret: 'SUPER-SECRET', userAssignedIdentityID: KUBELET, tenantId: 't' }))
  const token = join(dir, 'token')
  await writeFile(token, 'jwt')

  const workload = await chooseCredential({ env: { AZURE_FEDERATED_TOKEN_FILE: token, AZURE_CLIENT_ID: 'wi-client', AZURE_TENANT_ID: 'tenant' }, azureJsonPath: azureJson })
  assert.ok(workload.credential instanceof WorkloadIdentityCredential)
  assert.equal(workload.description, 'workload identity (client id wi-client, tenant tenant)')
  await assert.rejects(chooseCredential({ env: { AZURE_FEDERATED_TOKEN_FILE: token }, azureJsonPath: azureJson }), /AZURE_CLIENT_ID or AZURE_TENANT_ID/)

  const flag = await chooseCredential({ env: { AZURE_CLIENT_ID: 'env-client' }, identityClientId: 'flag-client', azureJsonPath: azureJson })
  assert.ok(flag.credential instanceof ManagedIdentityCredential)
  assert.equal(flag.description, 'managed identity (client id flag-client)')

  const env = await chooseCredential({ env: { AZURE_CLIENT_ID: 'env-client' }, azureJsonPath: azureJson })
  assert.equal(env.description, 'managed identity (client id env-client)')

  const kubelet = await chooseCredential({ env: {}, azureJsonPath: azureJson })
  assert.ok(kubelet.credential instanceof ManagedIdentityCredential)
  assert.equal(kubelet.description, `managed identity (kubelet identity ${KUBELET} from ${azureJson})`)

  const fallback = await chooseCredential({ env: {}, azureJsonPath: join(dir, 'missing.json') })
  assert.ok(fallback.credential instanceof DefaultAzureCredential)

  for (const c of [workload, flag, env, kubelet, fallback]) assert.ok(!c.description.includes('SUPER-SECRET'))
})

test('azure.json: unreadable, malformed or without a user-assigned identity gives no client id', async (t) => {
  const dir = await tempDir(t)
  const p = join(dir, 'azure.json')
  assert.equal(await readKubeletClientId(p), undefined)
  await writeFile(p, '{ not json')
  assert.equal(await readKubeletClientId(p), undefined)
  await writeFile(p, JSON.stringify({ userAssignedIdentityID: '' }))
  assert.equal(await readKubeletClientId(p), undefined)
  await writeFile(p, JSON.stringify({ userAssignedIdentityID: ` ${KUBELET} ` }))
  assert.equal(await readKubeletClientId(p), KUBELET)
  if (process.getuid?.() !== 0) {
    await chmod(p, 0o000)
    assert.equal(await readKubeletClientId(p), undefined)
  }
})
