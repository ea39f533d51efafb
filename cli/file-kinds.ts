import { ClusterFileKind, configFileContent, parseYamlWithSchema, type FileKind } from '../mesh/index.js';

/**
 * Every kind of file a `causeway` command reads, for `causeway config check` and `config
 * schema`. mesh/ knows only the cluster config (parts import mesh, never the reverse), so
 * the kinds are listed here, each checked by the code its own command runs. Each loads its
 * part only when asked for: `config check --kind cluster` does not load the controller.
 */
export const FILE_KINDS: Readonly<Record<string, () => Promise<FileKind>>> = {
  cluster: async () => ClusterFileKind,
  workload: async () => {
    const { SidecarConfig } = await import('../proxy/index.js');
    return {
      name: 'workload',
      summary: 'workload config, with its optional sidecar: section: causeway sidecar --config',
      schema: SidecarConfig,
      check: (text, source) => parseYamlWithSchema(SidecarConfig, text, source, configFileContent('workload')),
    };
  },
  service: async () => {
    const { ServiceManifestDocument, SERVICE_KINDS, parseManifest } = await import('../controller/index.js');
    return {
      name: 'service',
      summary: 'services manifest: causeway service apply -f',
      schema: ServiceManifestDocument,
      kindValues: SERVICE_KINDS,
      check: (text, source) => parseManifest(text, source, 'service'),
    };
  },
  policy: async () => {
    const { PolicyManifestDocument, POLICY_KIND_VALUES, parseManifest } = await import('../controller/index.js');
    return {
      name: 'policy',
      summary: 'authorization and traffic policies: causeway policy apply -f',
      schema: PolicyManifestDocument,
      kindValues: POLICY_KIND_VALUES,
      check: (text, source) => parseManifest(text, source, 'policy'),
    };
  },
  routes: async () => {
    const { RoutesFile, parseRoutesText } = await import('../gateway/index.js');
    return { name: 'routes', summary: 'static routes file: causeway gateway --routes', schema: RoutesFile, check: parseRoutesText };
  },
  'workload-group': async () => {
    const { WorkloadGroupDocument, WORKLOAD_GROUP_KIND, parseWorkloadGroupFile } = await import('../controller/index.js');
    return {
      name: 'workload-group',
      summary: 'workload group: causeway workload group apply -f',
      schema: WorkloadGroupDocument,
      kindValues: [WORKLOAD_GROUP_KIND],
      check: parseWorkloadGroupFile,
    };
  },
};

export const FILE_KIND_NAMES = Object.keys(FILE_KINDS);

/** The kinds named (all of them when none is): the parts that define them are loaded now. */
export async function loadFileKinds(names: readonly string[] = FILE_KIND_NAMES): Promise<FileKind[]> {
  return Promise.all(names.map((name) => FILE_KINDS[name]!()));
}
