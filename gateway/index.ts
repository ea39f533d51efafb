/** The SNI passthrough east-west gateway: what other parts and the CLI may use. */
export { SniGateway, type SniGatewayOptions, type RelayKind, type RouteSpecInput, type DrainResult } from './sni-gateway.js';
export { relayHandlesAvailable } from './handle-relay.js';
export {
  RouteTable,
  TargetPool,
  TargetRegistry,
  UpstreamTarget,
  Balancers,
  type Balancer,
  type Route,
  type RouteKind,
  type RouteRefusal,
  type RouteTableSpec,
  type ServiceRouteSpec,
  type EndpointSpec,
  type TargetAddress,
} from './route-table.js';
export { ClientHelloReader, readClientHello, parseClientHello, MAX_HELLO_BYTES, MAX_HELLO_WIRE_BYTES, type HelloOutcome, type HelloRefusal } from './client-hello.js';
export { RoutesFile, loadRoutesFile, parseRoutesText, routeSpecFromFile } from './routes-file.js';
export { CatalogRouteSource, GatewayRegistration, type CatalogRouteSourceOptions, type GatewayRegistrationOptions } from './catalog-routes.js';
export { GatewayMetrics } from './metrics.js';
export { GatewayError, GatewayErrorCodes } from './errors.js';
export { runGateway, runGatewayWorker, isGatewayWorker, type RunGatewayOptions, type RunningGateway } from './run.js';
