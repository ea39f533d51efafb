// The mesh view page: draws /api/events' views (server-sent, no reload) as a graph
// (cytoscape, served by causeway itself) and tables. Everything shown comes from the
// view's JSON and is written with textContent, never as HTML.
'use strict';

const COLORS = { synced: '#2e9e44', syncing: '#2f6fd0', connecting: '#2f6fd0', stale: '#e08a00', expired: '#c62828', down: '#c62828', 'local-store-down': '#c62828', unauthorized: '#8e24aa', unknown: '#888' };
const DASHED = new Set(['stale', 'expired', 'down', 'local-store-down', 'unauthorized']);
const HEALTH = { ok: '#2e9e44', degraded: '#e08a00', failing: '#c62828', idle: '#999' };

function age(ms) {
  if (ms === undefined || ms === null) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.round(ms / 60000)}m`;
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows);
}

function row(cells, attributes) {
  const tr = document.createElement('tr');
  for (const [k, v] of Object.entries(attributes ?? {})) tr.setAttribute(k, v);
  tr.append(...cells);
  return tr;
}

let graph;
let nodeIds = '';

const RANK = { idle: 0, ok: 1, degraded: 2, failing: 3 };

/** The worst health of the traffic into each cluster (its border in the graph). */
function inboundHealth(view) {
  const worst = new Map();
  for (const f of view.traffic.flows) {
    const was = worst.get(f.destinationCluster) ?? 'idle';
    if (RANK[f.health] > RANK[was]) worst.set(f.destinationCluster, f.health);
  }
  return worst;
}

function graphElements(view) {
  const health = inboundHealth(view);
  const nodes = view.clusters.map((c) => {
    const h = health.get(c.name) ?? 'idle';
    return {
      group: 'nodes',
      data: { id: `cluster:${c.name}`, label: `${c.name}\n${c.locality}${h === 'idle' ? '' : `\ntraffic ${h}`}`, state: c.local ? 'local' : c.linkState, color: c.local ? '#1f2a44' : (COLORS[c.linkState] ?? COLORS.unknown), border: h === 'idle' ? '#ffffff' : HEALTH[h], health: h },
    };
  });
  const known = new Set(view.clusters.map((c) => c.name));
  const links = view.links.filter((l) => known.has(l.peer)).map((l) => ({
    group: 'edges',
    data: {
      id: `link:${l.cluster}>${l.peer}`,
      source: `cluster:${l.cluster}`,
      target: `cluster:${l.peer}`,
      label: `${DASHED.has(l.state) ? l.state.toUpperCase() : l.state} · hb ${l.heartbeatAgeMs === undefined ? 'never' : age(l.heartbeatAgeMs)}`,
      color: COLORS[l.state] ?? COLORS.unknown,
      line: DASHED.has(l.state) ? 'dashed' : 'solid',
      width: DASHED.has(l.state) ? 5 : 3,
    },
    classes: 'link',
  }));
  // Links between other clusters, in the reporter's words: thinner, long dashes, labelled with who said so and when.
  const reported = (view.reportedLinks ?? []).filter((l) => known.has(l.cluster) && known.has(l.peer)).map((l) => ({
    group: 'edges',
    data: {
      id: `reported:${l.cluster}>${l.peer}`,
      source: `cluster:${l.cluster}`,
      target: `cluster:${l.peer}`,
      label: `${l.staleReport ? 'STALE REPORT' : (DASHED.has(l.state) ? l.state.toUpperCase() : l.state)} · reported by ${l.reportedBy}, ${age(l.reportAgeMs)} ago`,
      color: l.staleReport ? COLORS.unknown : (COLORS[l.state] ?? COLORS.unknown),
      line: 'dashed',
      width: 2,
    },
    classes: 'reported',
  }));
  const pairs = new Map();
  for (const f of view.traffic.flows) {
    if (f.sourceCluster === f.destinationCluster || !known.has(f.sourceCluster) || !known.has(f.destinationCluster)) continue;
    const key = `${f.sourceCluster}>${f.destinationCluster}`;
    const p = pairs.get(key) ?? { source: f.sourceCluster, target: f.destinationCluster, rps: 0, errors: 0 };
    p.rps += f.requestsPerSecond;
    p.errors += f.requestsPerSecond * f.errorRatio;
    pairs.set(key, p);
  }
  const traffic = [...pairs.entries()].map(([key, p]) => {
    const ratio = p.rps > 0 ? p.errors / p.rps : 0;
    const health = p.rps <= 0 ? 'idle' : ratio >= 0.1 ? 'failing' : ratio >= 0.001 ? 'degraded' : 'ok';
    return {
      group: 'edges',
      data: { id: `traffic:${key}`, source: `cluster:${p.source}`, target: `cluster:${p.target}`, label: `${p.rps.toFixed(1)} req/s · ${(ratio * 100).toFixed(1)}% 5xx`, color: HEALTH[health], line: 'dotted', width: 2 },
      classes: 'traffic',
    };
  });
  return [...nodes, ...links, ...reported, ...traffic];
}

function drawGraph(view) {
  if (typeof cytoscape !== 'function') return;
  const elements = graphElements(view);
  if (!graph) {
    graph = cytoscape({
      container: document.getElementById('graph'),
      wheelSensitivity: 0.3,
      style: [
        { selector: 'node', style: { label: 'data(label)', 'text-wrap': 'wrap', 'text-valign': 'center', 'text-halign': 'center', color: '#fff', 'font-size': 11, width: 110, height: 60, shape: 'round-rectangle', 'background-color': 'data(color)', 'border-width': 4, 'border-color': 'data(border)' } },
        { selector: 'edge', style: { label: 'data(label)', 'font-size': 10, 'text-background-color': '#fff', 'text-background-opacity': 0.9, 'text-background-padding': 2, 'curve-style': 'bezier', 'target-arrow-shape': 'triangle', 'line-color': 'data(color)', 'target-arrow-color': 'data(color)', 'line-style': 'data(line)', width: 'data(width)', color: 'data(color)' } },
        // Bowed: with the local cluster in the middle, a straight line between two peers would run behind it.
        { selector: 'edge.reported', style: { 'line-dash-pattern': [10, 6], opacity: 0.85, 'font-size': 9, 'curve-style': 'unbundled-bezier', 'control-point-distances': [140], 'control-point-weights': [0.5] } },
        { selector: 'edge.traffic', style: { 'control-point-step-size': 80, 'font-size': 9, 'text-margin-y': 12 } },
      ],
      layout: { name: 'preset' },
    });
  }
  const ids = new Set(elements.map((e) => e.data.id));
  graph.elements().filter((e) => !ids.has(e.id())).remove();
  for (const e of elements) {
    const existing = graph.getElementById(e.data.id);
    if (existing.nonempty()) {
      existing.data(e.data);
      existing.classes(e.classes ?? '');
    } else graph.add(e);
  }
  const nodesNow = view.clusters.map((c) => c.name).sort().join(',');
  if (nodesNow !== nodeIds) {
    nodeIds = nodesNow;
    // The local cluster in the middle, its peers around it: every link starts there.
    const many = view.clusters.length > 6;
    document.getElementById('graph').style.height = many ? '600px' : '';
    graph.resize();
    graph.layout(view.clusters.length <= 2
      ? { name: 'grid', padding: 40, avoidOverlap: true }
      : { name: 'concentric', padding: 30, avoidOverlap: true, minNodeSpacing: many ? 30 : 60, concentric: (n) => (n.data('state') === 'local' ? 2 : 1), levelWidth: () => 1 }).run();
  }
}

function render(view) {
  document.getElementById('seen-from').textContent = `— the mesh as ${view.seenFrom} sees it`;
  document.getElementById('generated-at').textContent = `read ${new Date(view.generatedAt).toLocaleTimeString()}`;
  const error = document.getElementById('read-error');
  error.hidden = !view.error;
  error.textContent = view.error ?? '';

  fillTable('clusters', view.clusters.map((c) => row([
    cell(c.name), cell(c.locality), cell(c.network),
    cell(c.local ? 'local' : `link ${c.linkState}`, 'state'),
    cell(c.controllers === undefined ? '-' : `${c.controllers}${c.controllerReady ? '' : ' (none live)'}`),
    cell(c.gateways.map((g) => `${g.address}:${g.port}${g.live ? '' : ' (not live)'}`).join(' ') || '(none)'),
  ], { 'data-cluster': c.name, 'data-state': c.local ? 'local' : c.linkState })));

  fillTable('links', view.links.map((l) => row([
    cell(l.cluster), cell(l.peer), cell(l.state, 'state'),
    cell(l.heartbeatAgeMs === undefined ? 'never' : `${age(l.heartbeatAgeMs)} ago`),
    cell(age(l.syncLagMs)), cell(l.appliedRevision ?? '-'), cell(String(l.imports)), cell(String(l.importsStale)),
    cell(l.conflicts.map((c) => `${c.service}: ${c.reason}`).join('; ') || String(l.importsInConflict)),
    cell([l.message, ...l.warnings].filter(Boolean).join('; ')),
  ], { 'data-link': `${l.cluster}>${l.peer}`, 'data-state': l.state })));

  fillTable('reported-links', (view.reportedLinks ?? []).map((l) => row([
    cell(l.cluster), cell(l.towardsLocal ? `${l.peer} (this cluster)` : l.peer),
    cell(l.staleReport ? `${l.state} (stale report)` : l.state, 'state'),
    cell(l.heartbeatAgeMs === undefined ? 'never' : `${age(l.heartbeatAgeMs)} ago`),
    cell(age(l.syncLagMs)), cell(String(l.imports)), cell(String(l.conflicts)),
    cell(`reported by ${l.reportedBy}, ${age(l.reportAgeMs)} ago`),
  ], { 'data-reported-link': `${l.cluster}>${l.peer}`, 'data-state': l.state, 'data-report': l.staleReport ? 'stale' : 'fresh', 'data-reported-by': l.reportedBy })));

  fillTable('services', view.services.flatMap((s) => s.locations.map((l, i) => row([
    cell(i === 0 ? s.service : ''), cell(l.cluster), cell(`${l.healthy}/${l.total}`),
    cell([l.source === 'local' ? (l.exported ? 'local, exported' : 'local') : 'imported', l.stale ? 'stale' : '', l.conflict ? `conflict: ${l.conflict}` : ''].filter(Boolean).join(', ')),
    cell(i === 0 ? s.subsets.join(', ') || '-' : ''),
    cell(i === 0 && s.split ? s.split.map((p) => `${p.subset} ${p.weight}`).join(', ') : ''),
  ], { 'data-service': s.service, 'data-cluster': l.cluster, 'data-state': l.stale ? 'stale' : 'synced' }))));

  const note = document.getElementById('traffic-note');
  note.textContent = view.traffic.source === 'none'
    ? 'no traffic numbers: start causeway ui with --prometheus URL (or --scrape a sidecar\'s /metrics URL)'
    : [view.traffic.error, view.traffic.source === 'scrape' ? 'scraped from the sidecars, over the last 10 s' : `from ${view.traffic.prometheus}, last minute`].filter(Boolean).join('; ');
  fillTable('traffic', view.traffic.flows.map((f) => row([
    cell(f.sourceCluster), cell(f.destinationCluster), cell(f.service), cell(f.requestsPerSecond.toFixed(2)),
    cell(`${(f.errorRatio * 100).toFixed(f.errorRatio < 0.01 ? 2 : 1)}%`), cell(f.p99Ms === undefined || f.p99Ms === null ? '-' : `${f.p99Ms.toFixed(1)}ms`),
    cell(f.health, `health-${f.health}`),
  ], { 'data-flow': `${f.sourceCluster}>${f.destinationCluster}>${f.service}`, 'data-health': f.health })));

  const certificates = view.certificates ?? { source: 'none', expiring: [] };
  document.getElementById('certificates-note').textContent = certificates.source === 'none'
    ? 'no certificate expiries: start causeway ui with --prometheus URL, or let it scrape the sidecars'
    : (certificates.error ?? (certificates.expiring.length === 0 ? 'none within the warning window' : 'renewals of these are failing'));
  fillTable('certificates', certificates.expiring.map((c) => row([
    cell(c.cluster), cell(c.identity), cell(c.instance), cell(c.notAfter),
    cell(c.secondsLeft <= 0 ? 'EXPIRED' : age(c.secondsLeft * 1000), c.secondsLeft <= 3600 ? 'health-failing' : 'health-degraded'),
  ], { 'data-identity': c.identity, 'data-cluster': c.cluster })));

  const events = document.getElementById('events');
  events.replaceChildren(...[...view.events].reverse().slice(0, 50).map((e) => {
    const li = document.createElement('li');
    li.dataset.severity = e.severity;
    li.dataset.kind = e.kind;
    li.textContent = `${new Date(e.at).toLocaleTimeString()} [${e.cluster}] ${e.message}`;
    return li;
  }));
  drawGraph(view);
  document.body.dataset.generatedAt = view.generatedAt;
}

function connect() {
  const status = document.getElementById('connection');
  const source = new EventSource('/api/events');
  source.addEventListener('open', () => { status.dataset.state = 'live'; status.textContent = 'live'; });
  source.addEventListener('error', () => { status.dataset.state = 'reconnecting'; status.textContent = 'reconnecting…'; });
  source.addEventListener('mesh', (event) => render(JSON.parse(event.data)));
}

connect();
