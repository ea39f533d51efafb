import type { Command } from 'commander';

type Register = (program: Command) => void;

/**
 * Each part of Causeway adds its command group here. Groups load lazily: `causeway
 * sidecar` imports the sidecar's code only, not the CA's, the gateway's or the topology
 * runner's, which keeps start-up time and a long-running process's memory small.
 */
export const commandModules: Readonly<Record<string, () => Promise<Register>>> = {
  demo: async () => (await import('./demo.js')).registerDemoCommand,
  config: async () => (await import('./config.js')).registerConfigCommands,
  ca: async () => (await import('./ca.js')).registerCaCommands,
  controller: async () => (await import('./controller.js')).registerControllerCommands,
  gateway: async () => (await import('./gateway.js')).registerGatewayCommands,
  federation: async () => (await import('./federation.js')).registerFederationCommands,
  sidecar: async () => (await import('./sidecar.js')).registerSidecarCommands,
  workload: async () => (await import('./workload.js')).registerWorkloadCommands,
  topology: async () => (await import('./topology.js')).registerTopologyCommands,
  app: async () => (await import('./app.js')).registerAppCommands,
  ui: async () => (await import('./ui.js')).registerUiCommands,
};

/** Top-level commands registered by a module of another name. */
const ownerOf: Readonly<Record<string, string>> = {
  service: 'controller',
  export: 'controller',
  unexport: 'controller',
  policy: 'controller',
  status: 'federation',
};

/** The registration functions needed for `argv`: one group when it names one, else all (help, errors). */
export async function commandGroupsFor(argv: readonly string[]): Promise<Register[]> {
  const first = argv.find((a) => !a.startsWith('-'));
  const module = first === undefined ? undefined : (ownerOf[first] ?? (first in commandModules ? first : undefined));
  const names = module === undefined || argv.includes('--help') || argv.includes('-h') ? Object.keys(commandModules) : [module];
  return Promise.all(names.map((name) => commandModules[name]!()));
}
