import type { Command } from 'commander';
import { ConfigSchemas, UsageError, configJsonSchema, loadConfigFile, type ConfigKind } from '../../mesh/index.js';

function kindOf(text: string): ConfigKind {
  if (!(text in ConfigSchemas)) throw new UsageError(`--kind must be one of ${Object.keys(ConfigSchemas).join(', ')} (got "${text}")`);
  return text as ConfigKind;
}

export function registerConfigCommands(program: Command): void {
  const config = program.command('config').description('check configuration files and print their JSON Schema');
  config
    .command('check')
    .description('validate a config file; prints the effective config (defaults filled in) with --print')
    .argument('<file>', 'YAML config file')
    .option('-k, --kind <kind>', `config kind: ${Object.keys(ConfigSchemas).join(' | ')}`, 'cluster')
    .option('--print', 'print the effective config as JSON')
    .action((file: string, options: { kind: string; print?: boolean }) => {
      const loaded = loadConfigFile(kindOf(options.kind), file);
      process.stdout.write(options.print ? `${JSON.stringify(loaded, null, 2)}\n` : `${file}: ok\n`);
    });
  config
    .command('schema')
    .description('print the JSON Schema of a config kind (generated from the validators)')
    .option('-k, --kind <kind>', `config kind: ${Object.keys(ConfigSchemas).join(' | ')}`, 'cluster')
    .action((options: { kind: string }) => {
      process.stdout.write(`${JSON.stringify(configJsonSchema(kindOf(options.kind)), null, 2)}\n`);
    });
}
