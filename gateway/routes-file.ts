import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { CausewayError, ErrorCodes, HealthStates, ValidationError, clusterName, configFileContent, dnsLabel, dnsName, host, lowerCaseServerName, parseYamlValue, port, validate } from '../mesh/index.js';
import { GatewayErrorCodes } from './errors.js';
import { Balancers, type Balancer, type ServiceRouteSpec, type TargetAddress } from './route-table.js';
import type { RouteSpecInput } from './sni-gateway.js';

/**
 * The static routes file (`causeway gateway --routes FILE`), for standalone gateways and
 * tests. Example:
 *
 * ```yaml
 * cluster: east                       # service SNIs naming this cluster go to endpoints below
 * trustDomain: causeway.internal
 * balancer: least-connections
 * routes:
 *   - service: reviews.default        # <name>.<namespace>
 *     ports: [9080]                   # optional: SNI ports accepted
 *     subsets: { v2: { version: v2 } }
 *     endpoints:
 *       - { address: 10.0.0.5, port: 15006, labels: { version: v2 } }
 *       - 10.0.0.6:15006
 *   - cluster: west                   # SNIs naming cluster west → its gateways
 *     gateways: [203.0.113.7:15443]
 *   - controller: [127.0.0.1:15012]   # controller.east.cw1.causeway.internal
 *   - sni: legacy.example.internal    # exact server name
 *     targets: [127.0.0.1:8443]
 * ```
 */

const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/;

const target = z.union([
  z.strictObject({ address: host.describe('host name or IP address'), port: port.describe('TCP port') }),
  z.string().transform((text, ctx): TargetAddress => {
    const match = HOST_PORT.exec(text);
    const portNumber = Number(match?.[2]);
    if (!match || portNumber < 1 || portNumber > 65535) {
      ctx.addIssue({ code: 'custom', message: `"${text}" is not host:port` });
      return z.NEVER;
    }
    return { address: match[1]!.replace(/^\[|\]$/g, ''), port: portNumber };
  }),
]);

const endpoint = z.union([
  target,
  z.strictObject({
    address: host.describe("the endpoint's address (its sidecar's inbound)"),
    port: port.describe("the endpoint's port (its sidecar's inbound port)"),
    labels: z.record(z.string(), z.string()).optional().describe("the endpoint's labels, matched by subsets"),
    health: z.enum(HealthStates).optional().describe('default healthy; unknown ones get connections only when none is healthy, unhealthy ones never'),
  }),
]);

const targets = (what: string) => z.array(target.describe(`${what}: host:port, or {address, port}`));

const serviceRoute = z.strictObject({
  service: z.string().regex(/^[a-z0-9-]+\.[a-z0-9-]+$/, 'expected <name>.<namespace>').describe("a service of this file's cluster, as <name>.<namespace>"),
  exported: z.boolean().default(true).describe('reachable from other clusters through this gateway'),
  ports: z.array(port).optional().describe('SNI ports accepted; omitted = any'),
  subsets: z.record(dnsLabel, z.record(z.string(), z.string())).optional().describe('named subsets of the endpoints, by labels, e.g. {v2: {version: v2}}'),
  endpoints: z.array(endpoint.describe('an endpoint: host:port, or {address, port, labels, health}')).describe("the service's endpoints"),
});
const clusterRoute = z.strictObject({
  cluster: clusterName.describe('a peer cluster: SNIs naming it go to its gateways'),
  gateways: targets('a gateway of the peer cluster').min(1, 'list at least one gateway').describe("the peer cluster's east-west gateways"),
});
const controllerRoute = z.strictObject({
  controller: targets('a controller').min(1, 'list at least one controller address').describe("this cluster's controller gRPC addresses, for its controller SNI"),
});
const sniRoute = z.strictObject({
  sni: z.string().transform(lowerCaseServerName).pipe(dnsName).describe('an exact TLS server name (any letter case: routed lower-cased)'),
  targets: targets('a target').min(1, 'list at least one target').describe('where connections with that server name go'),
});

export const RoutesFile = z.strictObject({
  cluster: clusterName.optional().describe('the cluster service SNIs name for the service routes below (needed with service routes)'),
  trustDomain: dnsName.optional().describe('SNIs naming another trust domain are refused; omitted = any'),
  balancer: z.enum(Balancers as [Balancer, ...Balancer[]]).optional().describe("how an endpoint is chosen (default: the gateway's gateway.balancer, least-connections)"),
  routes: z
    .array(
      z.union([serviceRoute, clusterRoute, controllerRoute, sniRoute], { error: 'a route has exactly one of service, cluster, controller or sni, with its fields' }).describe('one route: service, cluster, controller or sni, with its fields'),
    )
    .describe('the routes, each one of: service, cluster (a peer), controller, or sni (exact name)'),
});
export type RoutesFile = z.output<typeof RoutesFile>;

/** Turns a validated routes file into the gateway's route spec. */
export function routeSpecFromFile(file: RoutesFile, source = 'routes file'): RouteSpecInput {
  const sniRoutes: { sni: string; targets: TargetAddress[] }[] = [];
  const services: ServiceRouteSpec[] = [];
  const peerClusters: { name: string; gateways: TargetAddress[] }[] = [];
  const controllers: TargetAddress[] = [];
  for (const route of file.routes) {
    if ('service' in route) {
      if (file.cluster === undefined) {
        throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: 'cluster', message: 'service routes need the top-level cluster their SNIs name' }]);
      }
      const [name = '', namespace = ''] = route.service.split('.');
      services.push({ name, namespace, exported: route.exported, ports: route.ports, subsets: route.subsets, endpoints: route.endpoints });
    } else if ('cluster' in route) {
      peerClusters.push({ name: route.cluster, gateways: route.gateways });
    } else if ('controller' in route) {
      controllers.push(...route.controller);
    } else {
      sniRoutes.push({ sni: route.sni, targets: route.targets });
    }
  }
  return { cluster: file.cluster, trustDomain: file.trustDomain, balancer: file.balancer, sniRoutes, services, peerClusters, controllers };
}

/** Parses routes-file YAML text; errors name the file and the bad paths. */
export function parseRoutesText(text: string, source: string): RouteSpecInput {
  const value = parseYamlValue(text, source, configFileContent('routes', 'a static routes file (cluster, trustDomain, balancer, routes)'));
  return routeSpecFromFile(validate(RoutesFile, value, source, ErrorCodes.configInvalid), source);
}

export function loadRoutesFile(path: string): RouteSpecInput {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new CausewayError(GatewayErrorCodes.routesUnreadable, `cannot read routes file ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; check the path`, {
      cause: error,
    });
  }
  return parseRoutesText(text, path);
}
