import type { Command } from 'commander';
import { UsageError, checkFileKind, fileKindJsonSchema, readConfigText } from '../../mesh/index.js';
import { FILE_KINDS, FILE_KIND_NAMES, loadFileKinds } from '../file-kinds.js';

const KIND_HELP = `file kind: ${FILE_KIND_NAMES.join(' | ')}`;

function kindName(text: string): string {
  if (!(text in FILE_KINDS)) throw new UsageError(`--kind must be one of ${FILE_KIND_NAMES.join(', ')} (got "${text}")`);
  return text;
}

export function registerConfigCommands(program: Command): void {
  const config = program.command('config').description('check the files commands read (configs, manifests, policies, routes) and print their JSON Schema');
  config
    .command('check')
    .description('validate a file as the command that reads it does; without --kind, the kind is told from its keys. Prints the effective value (defaults filled in) with --print')
    .argument('<file>', 'YAML file')
    .option('-k, --kind <kind>', `${KIND_HELP} (default: told from the file's keys)`)
    .option('--print', 'print the effective value as JSON')
    .action(async (file: string, options: { kind?: string; print?: boolean }) => {
      const name = options.kind === undefined ? undefined : kindName(options.kind);
      const kinds = await loadFileKinds(name === undefined ? FILE_KIND_NAMES : [name]);
      const checked = checkFileKind(kinds, readConfigText(file), file, name);
      const what = `${checked.kind.name}${checked.detected ? ', told from its keys' : ''}`;
      process.stdout.write(options.print ? `${JSON.stringify(checked.value, null, 2)}\n` : `${file}: ok (${what})\n`);
    });
  config
    .command('schema')
    .description('print the JSON Schema of a file kind (generated from the validators, every key described)')
    .option('-k, --kind <kind>', KIND_HELP, 'cluster')
    .action(async (options: { kind: string }) => {
      const [kind] = await loadFileKinds([kindName(options.kind)]);
      process.stdout.write(`${JSON.stringify(fileKindJsonSchema(kind!), null, 2)}\n`);
    });
}
