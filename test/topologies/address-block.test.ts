// --subnet-base: a topology's 10.77.x.y plan moved whole to another /16 (Docker's networks
// sit in the host's routing table, so parallel runs need apart blocks).
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TOPOLOGIES_DIR, TopologyErrorCodes, TopologyFileError, loadComposeFile, loadScenarioFile, parseAddressBlock, parseCompose, relocateTopology } from '../../topologies/index.js';

test('a relocated copy moves subnets, fixed addresses, config files and scenario regexps; the original stays', (t) => {
  const source = join(TOPOLOGIES_DIR, 'vm-onboarding');
  const copy = relocateTopology(join(source, 'compose.yaml'), join(source, 'scenario.yaml'), '10.178');
  t.teardown(() => copy.remove());
  const project = loadComposeFile(copy.composeFile, { projectName: 'vmonboarding' });
  t.is(project.name, 'vmonboarding');
  // (and the implicit default network, which has no subnet of its own)
  t.deepEqual([...project.networks.values()].map((n) => n.subnet).filter(Boolean), ['10.178.10.0/24', '10.178.50.0/24']);
  t.is(project.services.get('host')!.networks.get('vms')!.ipv4Address, '10.178.50.20');
  t.regex(readFileSync(join(copy.composeFile, '..', 'config', 'east.yaml'), 'utf8'), /advertiseAddress: 10\.178\.50\.10/);
  const scenario = readFileSync(copy.scenarioFile!, 'utf8');
  t.false(/10(\\+\.|\.)77/.test(scenario), 'no 10.77 left in the scenario, escaped or not');
  t.regex(scenario, /10\\\\\.178\\\\\.50\\\\\.20/);
  t.is(loadScenarioFile(copy.scenarioFile!).steps.length, loadScenarioFile(join(source, 'scenario.yaml')).steps.length);
  t.regex(readFileSync(join(source, 'compose.yaml'), 'utf8'), /10\.77\.50\.20/);
  copy.remove();
  t.false(existsSync(copy.composeFile));
});

test('--subnet-base takes the first two octets of a 10.x block only', (t) => {
  t.is(parseAddressBlock('10.178'), '10.178');
  for (const bad of ['10.256', '192.168', '10', '10.1.2', 'x'])
    t.throws(() => parseAddressBlock(bad), { message: /--subnet-base must be the first two octets of a 10\.x\.0\.0\/16 block/ }, bad);
});

test('dns: 127.0.0.1 is accepted (the namespace resolves through its loopback), any other server refused', (t) => {
  const context = { file: '/virtual/compose.yaml', dir: '/virtual/demo', env: {} };
  t.notThrows(() => parseCompose('services:\n  a: { image: causeway:dev, dns: 127.0.0.1 }\n', context));
  t.notThrows(() => parseCompose('services:\n  a: { image: causeway:dev, dns: [127.0.0.1] }\n', context));
  const error = t.throws(() => parseCompose('services:\n  a: { image: causeway:dev, dns: 8.8.8.8 }\n', context), { instanceOf: TopologyFileError })!;
  t.is(error.code, TopologyErrorCodes.unsupported);
  t.is(error.path, 'services.a.dns');
});
