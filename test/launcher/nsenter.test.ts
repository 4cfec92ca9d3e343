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

test('pod cgroup: the shim joins it before nsenter, whose argv stays the SPEC\'s', () => {
  const { file, args } = buildCommand({ ...base, nsenter: true, cgroup: { joinDir: '/sys/fs/cgroup/pkg-serve-run.install', joinOnNode: false } })
  assert.equal(file, '/bin/sh')
  assert.deepEqual(args.slice(2, 4), ['pkg-serve-join', '/sys/fs/cgroup/pkg-serve-run.install'])
  assert.deepEqual(args.slice(4), ['nsenter', '--target', '1', '--mount', '--uts', '--ipc', '--net', '--pid', '--', '/opt/actions/install', 'acct-arg', 'two words', '--force', '$(rm -rf /)'])
})

test('node cgroup: nsenter also enters the node\'s cgroup namespace, and the shim runs there', () => {
  const { file, args } = buildCommand({ ...base, nsenter: true, cgroup: { joinDir: '/sys/fs/cgroup/pkg-serve.slice/install', joinOnNode: true } })
  assert.equal(file, 'nsenter')
  assert.deepEqual(args.slice(0, 9), ['--target', '1', '--cgroup', '--mount', '--uts', '--ipc', '--net', '--pid', '--'])
  assert.equal(args[9], '/bin/sh')
  assert.deepEqual(args.slice(12), ['pkg-serve-join', '/sys/fs/cgroup/pkg-serve.slice/install', '/opt/actions/install', 'acct-arg', 'two words', '--force', '$(rm -rf /)'])
})
