import type { Command } from 'commander';
import { registerDemoCommand } from './demo.js';
import { registerConfigCommands } from './config.js';
import { registerCaCommands } from './ca.js';
import { registerTopologyCommands } from './topology.js';
import { registerAppCommands } from './app.js';
import { registerGatewayCommands } from './gateway.js';
import { registerFederationCommands } from './federation.js';
import { registerSidecarCommands } from './sidecar.js';
import { registerWorkloadCommands } from './workload.js';
import { registerControllerCommands } from './controller.js';

/** Each part of Causeway adds its command group here. */
export const commandGroups: ReadonlyArray<(program: Command) => void> = [
  registerDemoCommand,
  registerConfigCommands, registerCaCommands, registerTopologyCommands, registerAppCommands, registerGatewayCommands, registerFederationCommands, registerSidecarCommands, registerControllerCommands, registerWorkloadCommands];
