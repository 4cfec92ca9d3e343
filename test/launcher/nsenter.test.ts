import { test } from 'node:test'
import assert from 'node:assert/strict'
import { buildCommand } from '../../src/launcher/nsenter.ts'

const base = { action: 'install', args: ['acct-arg', 'two words', '--force', '$(rm -rf /)'], nsenterTarget: '1', hostPath: '/opt/actions/', hostDir: '/mnt/actions' }

test('nsenter argv: the namespaces of the target, then the copy as the node sees it, args unchanged', () => {
  assert.deepEqual(buildCommand({ ...base, nsenter: true }), {
    file: 'nsenter',
    args: ['--target', '1', '--mount', '--uts', '--ipc', '--net', '--pid', '--', '/opt/actions/install', 'acct-arg', 'two words', '--force', '$(rm -rf /)']
  })
})

test('--no-nsenter runs the copy as this container sees it', () => {
  assert.deepEqual(buildCommand({ ...base, nsenter: false }), {
    file: '/mnt/actions/install',
    args: ['acct-arg', 'two words', '--force', '$(rm -rf /)']
  })
})
