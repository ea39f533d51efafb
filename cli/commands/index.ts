import type { Command } from 'commander';
import { registerConfigCommands } from './config.js';
import { registerGatewayCommands } from './gateway.js';

/** Each part of Causeway adds its command group here. */
export const commandGroups: ReadonlyArray<(program: Command) => void> = [registerConfigCommands, registerGatewayCommands];
