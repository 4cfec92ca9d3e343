// Chooses the Azure credential, deterministically and in the order the operator expects:
// connection string (handled by the caller) → workload identity → managed identity with a
// client id (flag/env, else the kubelet identity from the node's azure.json) → DefaultAzureCredential.
// It must never log or return a secret: descriptions name the kind and the (public) client id only.

import { readFile } from 'node:fs/promises'
import type { TokenCredential } from '@azure/identity'
import { UserError } from '../../lib/errors.ts'

export class CredentialConfigError extends UserError {
  override name = 'CredentialConfigError'
}

export interface CredentialOptions {
  readonly env: Readonly<Record<string, string | undefined>>
  /** `--identity-client-id`; falls back to AZURE_CLIENT_ID. */
  readonly identityClientId?: string | undefined
  /** The node's cloud-provider config, whose `userAssignedIdentityID` is the kubelet identity. */
  readonly azureJsonPath: string
}

export interface CredentialChoice {
  readonly credential: TokenCredential
  readonly description: string
}

/** Reads the kubelet identity's client id from azure.json; undefined when absent or unreadable. */
export async function readKubeletClientId (path: string): Promise<string | undefined> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch {
    return undefined
  }
  try {
    const json: unknown = JSON.parse(text)
    const id = typeof json === 'object' && json !== null && 'userAssignedIdentityID' in json ? json.userAssignedIdentityID : undefined
    return typeof id === 'string' && id.trim() !== '' ? id.trim() : undefined
  } catch {
    return undefined
  }
}

export async function chooseCredential (opts: CredentialOptions): Promise<CredentialChoice> {
  const { env } = opts
  // Loaded only when a token credential is needed: @azure/identity (and MSAL) weigh ~20 MiB of
  // memory that connection-string, SAS and local-directory runs never use.
  const { DefaultAzureCredential, ManagedIdentityCredential, WorkloadIdentityCredential } = await import('@azure/identity')
  const nonEmpty = (v: string | undefined): string | undefined => v !== undefined && v.trim() !== '' ? v.trim() : undefined

  const tokenFile = nonEmpty(env.AZURE_FEDERATED_TOKEN_FILE)
  if (tokenFile !== undefined) {
    const clientId = nonEmpty(opts.identityClientId) ?? nonEmpty(env.AZURE_CLIENT_ID)
    const tenantId = nonEmpty(env.AZURE_TENANT_ID)
    if (clientId === undefined || tenantId === undefined) {
      throw new CredentialConfigError('AZURE_FEDERATED_TOKEN_FILE is set (workload identity) but AZURE_CLIENT_ID or AZURE_TENANT_ID is not: label the service account with azure.workload.identity/client-id')
    }
    return {
      credential: new WorkloadIdentityCredential({ tokenFilePath: tokenFile, clientId, tenantId }),
      description: `workload identity (client id ${clientId}, tenant ${tenantId})`
    }
  }

  const explicit = nonEmpty(opts.identityClientId) ?? nonEmpty(env.AZURE_CLIENT_ID)
  if (explicit !== undefined) {
    return {
      credential: new ManagedIdentityCredential({ clientId: explicit }),
      description: `managed identity (client id ${explicit})`
    }
  }

  const kubelet = await readKubeletClientId(opts.azureJsonPath)
  if (kubelet !== undefined) {
    return {
      credential: new ManagedIdentityCredential({ clientId: kubelet }),
      description: `managed identity (kubelet identity ${kubelet} from ${opts.azureJsonPath})`
    }
  }

  return {
    credential: new DefaultAzureCredential(),
    description: 'DefaultAzureCredential (environment, managed identity, Azure CLI, …)'
  }
}
