import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The sidecar's metrics, all registered on one registry (served at /metrics). */
export class SidecarMetrics {
  readonly connections: Counter<'direction' | 'source_cluster' | 'source_service' | 'destination_cluster' | 'destination_service' | 'result'>;
  readonly connectionSeconds: Histogram<'direction' | 'destination_cluster' | 'destination_service'>;
  readonly bytes: Counter<'direction' | 'destination_cluster' | 'destination_service' | 'flow'>;
  readonly activeConnections: Gauge<'direction'>;
  readonly requests: Counter<'direction' | 'source_cluster' | 'source_service' | 'destination_cluster' | 'destination_service' | 'code' | 'result'>;
  readonly requestSeconds: Histogram<'direction' | 'destination_cluster' | 'destination_service'>;
  readonly connectAttempts: Counter<'destination_cluster' | 'destination_service' | 'kind' | 'result'>;
  readonly secureNamingRefusals: Counter<'destination_service'>;
  readonly authorizationDenials: Counter<'destination_service' | 'source_namespace' | 'source_cluster' | 'policy'>;
  readonly inboundRefused: Counter<'reason'>;
  readonly outlierEjections: Counter<'destination_cluster' | 'kind' | 'reason'>;
  readonly certificateExpiry: Gauge<'identity'>;
  readonly certificateIssued: Gauge<'identity'>;
  readonly certificateRenewals: Counter<'result'>;
  readonly snapshots: Counter<'result'>;
  readonly dnsQueries: Counter<'result'>;
  readonly retries: Counter<'destination_service' | 'route' | 'reason'>;
  readonly retryBudgetExhausted: Counter<'destination_service' | 'route'>;
  readonly rateLimited: Counter<'destination_service' | 'route'>;
  readonly spansExported: Counter;
  readonly spansDropped: Counter<'reason'>;
  readonly h2Sessions: Gauge<'direction' | 'peer'>;
  readonly h2cUpgrades: Counter<'result' | 'reason'>;
  readonly appHandoffs: Counter<'to'>;
  readonly grpcResponses: Counter<'direction' | 'destination_cluster' | 'destination_service' | 'grpc_status'>;
  readonly grpcHeadersHoldExpired: Counter<'destination_service'>;

  constructor(registry: Registry) {
    const registers = [registry];
    const durationBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
    const peerLabels = ['direction', 'source_cluster', 'source_service', 'destination_cluster', 'destination_service'] as const;
    this.connections = new Counter({ name: 'causeway_sidecar_connections_total', help: 'Proxied TCP connections by peers and result (ok or an error code)', labelNames: [...peerLabels, 'result'], registers });
    this.connectionSeconds = new Histogram({ name: 'causeway_sidecar_connection_duration_seconds', help: 'Lifetime of proxied connections', labelNames: ['direction', 'destination_cluster', 'destination_service'], buckets: durationBuckets, registers });
    this.bytes = new Counter({ name: 'causeway_sidecar_bytes_total', help: 'Bytes proxied; flow=sent is towards the destination', labelNames: ['direction', 'destination_cluster', 'destination_service', 'flow'], registers });
    this.activeConnections = new Gauge({ name: 'causeway_sidecar_active_connections', help: 'Open downstream connections', labelNames: ['direction'], registers });
    this.requests = new Counter({ name: 'causeway_sidecar_http_requests_total', help: 'HTTP requests on HTTP ports by peers, status code and result', labelNames: [...peerLabels, 'code', 'result'], registers });
    this.requestSeconds = new Histogram({ name: 'causeway_sidecar_http_request_duration_seconds', help: 'HTTP request duration until the response ends', labelNames: ['direction', 'destination_cluster', 'destination_service'], buckets: durationBuckets, registers });
    this.connectAttempts = new Counter({ name: 'causeway_sidecar_upstream_connect_attempts_total', help: 'mTLS connects to targets (endpoint or gateway) by result', labelNames: ['destination_cluster', 'destination_service', 'kind', 'result'], registers });
    this.secureNamingRefusals = new Counter({ name: 'causeway_sidecar_secure_naming_refusals_total', help: 'Upstream connections refused because the server identity is not allowed for the service', labelNames: ['destination_service'], registers });
    this.authorizationDenials = new Counter({ name: 'causeway_sidecar_authorization_denials_total', help: 'Inbound connections denied by authorization policy', labelNames: ['destination_service', 'source_namespace', 'source_cluster', 'policy'], registers });
    this.inboundRefused = new Counter({ name: 'causeway_sidecar_inbound_refused_total', help: 'Inbound connections refused before authorization (no/invalid client certificate, bad SNI…)', labelNames: ['reason'], registers });
    this.outlierEjections = new Counter({ name: 'causeway_sidecar_outlier_ejections_total', help: 'Targets ejected by outlier detection; kind=gateway is a peer cluster\'s gateway', labelNames: ['destination_cluster', 'kind', 'reason'], registers });
    this.certificateIssued = new Gauge({ name: 'causeway_sidecar_certificate_issued_timestamp_seconds', help: "when the served workload certificate's lifetime began (Unix seconds; notBefore without the CA's backdating): renewal is due at half of the lifetime", labelNames: ['identity'], registers });
    this.certificateExpiry = new Gauge({ name: 'causeway_sidecar_certificate_expiry_timestamp_seconds', help: 'notAfter of the workload certificate being served (Unix seconds)', labelNames: ['identity'], registers });
    this.certificateRenewals = new Counter({ name: 'causeway_sidecar_certificate_renewals_total', help: 'Certificate issuance attempts by result', labelNames: ['result'], registers });
    this.snapshots = new Counter({ name: 'causeway_sidecar_snapshots_total', help: 'Snapshots received by result (applied, rejected)', labelNames: ['result'], registers });
    this.retries = new Counter({ name: 'causeway_sidecar_http_retries_total', help: 'HTTP request retries by traffic policy route and what the failed try ended with (connect-failure, refused-stream, reset, timeout, response)', labelNames: ['destination_service', 'route', 'reason'], registers });
    this.retryBudgetExhausted = new Counter({ name: 'causeway_sidecar_http_retry_budget_exhausted_total', help: 'HTTP retries not made because the retry budget was used up', labelNames: ['destination_service', 'route'], registers });
    this.rateLimited = new Counter({ name: 'causeway_sidecar_rate_limited_total', help: 'HTTP requests refused (429) by a traffic policy route\'s rate limit', labelNames: ['destination_service', 'route'], registers });
    this.spansExported = new Counter({ name: 'causeway_sidecar_spans_exported_total', help: 'Spans the OTLP collector accepted', registers });
    this.spansDropped = new Counter({ name: 'causeway_sidecar_spans_dropped_total', help: 'Spans dropped: queue_full (collector too slow or down), export_error, rejected', labelNames: ['reason'], registers });
    this.h2Sessions = new Gauge({ name: 'causeway_sidecar_h2_sessions', help: 'Open HTTP/2 sessions; peer=app is the app side (the app\'s h2c connections outbound, on any HTTP port, prior knowledge or upgraded; the sidecar\'s own to the app inbound), peer=mesh the mTLS side', labelNames: ['direction', 'peer'], registers });
    this.h2cUpgrades = new Counter({ name: 'causeway_sidecar_h2c_upgrades_total', help: 'HTTP/1.1 requests from the app that asked for Upgrade: h2c, by result: upgraded (reason none), declined (served as HTTP/1.1, or refused on an http2/grpc port: no-settings, chunked-body, body-too-large, headers-too-large), refused (400: bad-settings)', labelNames: ['result', 'reason'], registers });
    this.appHandoffs = new Counter({ name: 'causeway_sidecar_app_connection_handoffs_total', help: 'App connections to outbound HTTP ports that left the HTTP/1.1 fast path: to=http2 (the connection opened with the HTTP/2 preface: h2c with prior knowledge), to=node-http1 (a request the fast path does not take; Node\'s HTTP server serves the rest of the connection). Upgrades to h2c are in causeway_sidecar_h2c_upgrades_total', labelNames: ['to'], registers });
    this.grpcResponses = new Counter({ name: 'causeway_sidecar_grpc_responses_total', help: 'gRPC calls by their grpc-status (from the response headers or trailers; the sidecar\'s own errors included). Each call is also in causeway_sidecar_http_requests_total', labelNames: ['direction', 'destination_cluster', 'destination_service', 'grpc_status'], registers });
    this.grpcHeadersHoldExpired = new Counter({ name: 'causeway_sidecar_grpc_headers_hold_expired_total', help: 'gRPC calls whose response headers were held for a possible retry and went to the app only when the hold ran out (no message or status within it): streams whose headers came late by the hold', labelNames: ['destination_service'], registers });
    this.dnsQueries = new Counter({ name: 'causeway_sidecar_dns_queries_total', help: 'DNS queries by result (mesh, nxdomain, forwarded, refused, error)', labelNames: ['result'], registers });
  }
}
