/**
 * The mesh view: the whole mesh as one cluster sees it, as a model (JSON), a live page
 * (`causeway ui`) and `causeway status --all` (ui/README.md). What other parts may use.
 */
export { readMeshCatalog, MESH_VIEW_SCHEMA, type MeshView, type MeshCatalogView, type ClusterView, type LinkView, type ServiceView, type ServiceLocation, type GatewayView } from './mesh-view.js';
export { meshEvents, certificateEvents, certificateRenewals, EventLog, type MeshEvent } from './mesh-events.js';
export { PrometheusCertificates, EXPIRY_WARNING_SECONDS, EXPIRY_QUERY, NO_CERTIFICATES, certificateExpiry, expiringCertificates, type CertificateExpiry, type CertificatesView, type CertificateSource, type ServedCertificates } from './certificate-expiries.js';
export { ScrapedCertificates } from './scraped-certificates.js';
export { PrometheusClient, type PrometheusSample } from './prometheus-client.js';
export { MeshViewFeed, type MeshViewFeedOptions } from './mesh-view-feed.js';
export { ScrapedTraffic, quantileOfBuckets } from './scraped-traffic.js';
export { CatalogScrapeTargets, GivenScrapeTargets, type ScrapeTargets } from './scrape-targets.js';
export { parseMetricsText, type MetricSample } from './metrics-text.js';
export { PrometheusTraffic, TrafficQueries, trafficHealth, DEGRADED_RATIO, FAILING_RATIO, NO_TRAFFIC, type TrafficView, type TrafficFlow, type TrafficHealth, type TrafficSource } from './traffic.js';
export { ViewServer, isLoopbackHost, UI_DEFAULT_PORT, type ViewServerOptions } from './view-server.js';
export { runMeshView, type RunMeshViewOptions, type RunningMeshView } from './run.js';
export { MeshViewService, type MeshViewServiceOptions } from './mesh-view-service.js';
export { forwardLoopbackToSocket, type SocketForward } from './socket-forward.js';
export { renderMeshStatus } from './render-status.js';
export { UiMetrics } from './metrics.js';
export { UiError, UiErrorCodes } from './errors.js';
