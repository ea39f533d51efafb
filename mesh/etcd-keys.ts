import { ErrorCodes, InvalidNameError } from './errors.js';
import { clusterNameProblem, dnsLabelProblem } from './labels.js';

/**
 * The one codec for Causeway's etcd key layout (docs/architecture.md "etcd key layout").
 * Build keys with {@link EtcdKeys}; classify keys read back with {@link parseEtcdKey}.
 */
export const KEY_ROOT = '/causeway/v1/';

export const PolicyKinds = ['authorization', 'traffic'] as const;
export type PolicyKind = (typeof PolicyKinds)[number];

const ID = /^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$/;

function fail(input: string, reason: string): never {
  throw new InvalidNameError(ErrorCodes.etcdKeyInvalid, input, reason);
}

function label(what: string, value: string, key: string): string {
  const problem = dnsLabelProblem(value);
  if (problem) fail(key, `${what}: ${problem}`);
  return value;
}

function id(what: string, value: string, key: string): string {
  if (!ID.test(value)) fail(key, `${what} "${value}" must be 1-128 of [a-z0-9._-], starting and ending with a letter or digit`);
  return value;
}

function cluster(value: string, key: string): string {
  const problem = clusterNameProblem(value);
  if (problem) fail(key, `peer: ${problem}`);
  return value;
}

export const EtcdKeys = {
  root: KEY_ROOT,
  cluster: `${KEY_ROOT}cluster`,
  servicesPrefix: `${KEY_ROOT}services/`,
  service: (ns: string, name: string) => {
    const key = `${KEY_ROOT}services/${ns}/${name}`;
    label('namespace', ns, key);
    label('service', name, key);
    return key;
  },
  endpointsPrefix: `${KEY_ROOT}endpoints/`,
  serviceEndpointsPrefix: (ns: string, name: string) => {
    const key = `${KEY_ROOT}endpoints/${ns}/${name}/`;
    label('namespace', ns, key);
    label('service', name, key);
    return key;
  },
  endpoint: (ns: string, name: string, endpointId: string) => {
    const key = `${KEY_ROOT}endpoints/${ns}/${name}/${endpointId}`;
    label('namespace', ns, key);
    label('service', name, key);
    id('endpoint id', endpointId, key);
    return key;
  },
  controllersPrefix: `${KEY_ROOT}controllers/`,
  /** A running controller's registration, on its lease: it is listed while it lives. */
  controller: (controllerId: string) => {
    const key = `${KEY_ROOT}controllers/${controllerId}`;
    id('controller id', controllerId, key);
    return key;
  },
  gatewaysPrefix: `${KEY_ROOT}gateways/`,
  gateway: (gatewayId: string) => {
    const key = `${KEY_ROOT}gateways/${gatewayId}`;
    id('gateway id', gatewayId, key);
    return key;
  },
  exportsPrefix: `${KEY_ROOT}exports/`,
  exportedCluster: `${KEY_ROOT}exports/_cluster`,
  heartbeat: `${KEY_ROOT}exports/_heartbeat`,
  /** This cluster's own links as its federation reports them to peers (federation/README.md "Links reported by peers"). */
  reportedLinks: `${KEY_ROOT}exports/_links`,
  exportedService: (ns: string, name: string) => {
    const key = `${KEY_ROOT}exports/${ns}/${name}`;
    label('namespace', ns, key);
    label('service', name, key);
    return key;
  },
  importsPrefix: `${KEY_ROOT}imports/`,
  peerImportsPrefix: (peer: string) => {
    const key = `${KEY_ROOT}imports/${peer}/`;
    cluster(peer, key);
    return key;
  },
  importedService: (peer: string, ns: string, name: string) => {
    const key = `${KEY_ROOT}imports/${peer}/${ns}/${name}`;
    cluster(peer, key);
    label('namespace', ns, key);
    label('service', name, key);
    return key;
  },
  linkStatus: (peer: string) => {
    const key = `${KEY_ROOT}imports/${peer}/_status`;
    cluster(peer, key);
    return key;
  },
  /** The last valid `exports/_links` read from `peer`: the peer's own links, as it reports them. */
  peerReportedLinks: (peer: string) => {
    const key = `${KEY_ROOT}imports/${peer}/_links`;
    cluster(peer, key);
    return key;
  },
  policiesPrefix: `${KEY_ROOT}policies/`,
  policy: (kind: PolicyKind, ns: string, name: string) => {
    const key = `${KEY_ROOT}policies/${kind}/${ns}/${name}`;
    if (!PolicyKinds.includes(kind)) fail(key, `policy kind must be one of ${PolicyKinds.join(', ')}`);
    label('namespace', ns, key);
    label('policy name', name, key);
    return key;
  },
  workloadsPrefix: `${KEY_ROOT}workloads/`,
  workloadGroup: (ns: string, name: string) => {
    const key = `${KEY_ROOT}workloads/${ns}/${name}`;
    label('namespace', ns, key);
    label('workload group', name, key);
    return key;
  },
} as const;

export type EtcdKey =
  | { readonly kind: 'cluster' }
  | { readonly kind: 'service'; readonly namespace: string; readonly name: string }
  | { readonly kind: 'endpoint'; readonly namespace: string; readonly name: string; readonly endpointId: string }
  | { readonly kind: 'controller'; readonly controllerId: string }
  | { readonly kind: 'gateway'; readonly gatewayId: string }
  | { readonly kind: 'exported-cluster' }
  | { readonly kind: 'heartbeat' }
  | { readonly kind: 'reported-links' }
  | { readonly kind: 'exported-service'; readonly namespace: string; readonly name: string }
  | { readonly kind: 'imported-service'; readonly peer: string; readonly namespace: string; readonly name: string }
  | { readonly kind: 'link-status'; readonly peer: string }
  | { readonly kind: 'peer-reported-links'; readonly peer: string }
  | { readonly kind: 'policy'; readonly policyKind: PolicyKind; readonly namespace: string; readonly name: string }
  | { readonly kind: 'workload-group'; readonly namespace: string; readonly name: string };

/** Classifies a key of the layout. Throws {@link InvalidNameError} for anything else. */
export function parseEtcdKey(key: string): EtcdKey {
  if (!key.startsWith(KEY_ROOT)) fail(key, `not under ${KEY_ROOT}`);
  const parts = key.slice(KEY_ROOT.length).split('/');
  const [head, a = '', b = '', c = ''] = parts;
  const n = parts.length;
  switch (head) {
    case 'cluster':
      if (n === 1) return { kind: 'cluster' };
      break;
    case 'services':
      if (n === 3) return { kind: 'service', namespace: label('namespace', a, key), name: label('service', b, key) };
      break;
    case 'endpoints':
      if (n === 4) {
        return { kind: 'endpoint', namespace: label('namespace', a, key), name: label('service', b, key), endpointId: id('endpoint id', c, key) };
      }
      break;
    case 'controllers':
      if (n === 2) return { kind: 'controller', controllerId: id('controller id', a, key) };
      break;
    case 'gateways':
      if (n === 2) return { kind: 'gateway', gatewayId: id('gateway id', a, key) };
      break;
    case 'exports':
      if (n === 2 && a === '_cluster') return { kind: 'exported-cluster' };
      if (n === 2 && a === '_heartbeat') return { kind: 'heartbeat' };
      if (n === 2 && a === '_links') return { kind: 'reported-links' };
      if (n === 3) return { kind: 'exported-service', namespace: label('namespace', a, key), name: label('service', b, key) };
      break;
    case 'imports':
      if (n === 3 && b === '_status') return { kind: 'link-status', peer: cluster(a, key) };
      if (n === 3 && b === '_links') return { kind: 'peer-reported-links', peer: cluster(a, key) };
      if (n === 4) {
        return { kind: 'imported-service', peer: cluster(a, key), namespace: label('namespace', b, key), name: label('service', c, key) };
      }
      break;
    case 'policies':
      if (n === 4) {
        if (!(PolicyKinds as readonly string[]).includes(a)) fail(key, `policy kind "${a}" must be one of ${PolicyKinds.join(', ')}`);
        return { kind: 'policy', policyKind: a as PolicyKind, namespace: label('namespace', b, key), name: label('policy name', c, key) };
      }
      break;
    case 'workloads':
      if (n === 3) return { kind: 'workload-group', namespace: label('namespace', a, key), name: label('workload group', b, key) };
      break;
    default:
      fail(key, `unknown key family "${head ?? ''}"`);
  }
  fail(key, `wrong number of path segments for ${head ?? ''}`);
}
