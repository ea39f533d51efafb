import test from 'ava';
import { RouteTable, TargetRegistry, type Route, type RouteTableSpec } from '../../gateway/route-table.js';

// The route table is plain data: built from a spec, no sockets (the balancers with real
// connections are in passthrough.test.ts).
const stats = () => ({ ok: 0, error: 0, upstreamFailed: 0 });
const spec = (balancer: RouteTableSpec['balancer']): RouteTableSpec => ({
  balancer,
  sniRoutes: [{ sni: 'legacy.example.internal', targets: [{ address: '127.0.0.1', port: 1001 }, { address: '127.0.0.1', port: 1002 }, { address: '127.0.0.1', port: 1003 }] }],
});

function route(table: RouteTable): Route {
  const r = table.resolve('legacy.example.internal');
  if (typeof r === 'string') throw new Error(`not routed: ${r}`);
  return r;
}

test('round-robin continues across table rebuilds instead of starting over at the first target', (t) => {
  const registry = new TargetRegistry();
  const picks: number[] = [];
  // Every connection meets a fresh table, as when endpoints or health change all the time.
  for (let i = 0; i < 6; i++) picks.push(route(new RouteTable(spec('round-robin'), registry, stats)).pool.pick(undefined)!.port);
  t.deepEqual([...picks.slice(0, 3)].sort(), [1001, 1002, 1003], `each target once in three picks: ${picks}`);
  t.deepEqual(picks.slice(3), picks.slice(0, 3), 'then the same turn again');
});

test('least-connections (the default of the gateway config) picks the target with the fewest open connections, also after a rebuild', (t) => {
  const registry = new TargetRegistry();
  const first = route(new RouteTable(spec('least-connections'), registry, stats)).pool.pick(undefined)!;
  first.active++;
  const second = route(new RouteTable(spec('least-connections'), registry, stats)).pool.pick(undefined)!;
  t.not(second, first);
  second.active++;
  const third = route(new RouteTable(spec('least-connections'), registry, stats)).pool.pick(undefined)!;
  t.true(third !== first && third !== second);
});

test('the endpoints gauge counts exported services by health; unexported ones are not counted', (t) => {
  const table = new RouteTable(
    {
      balancer: 'least-connections',
      services: [
        { name: 'a', namespace: 'default', exported: true, endpoints: [{ address: '10.0.0.1', port: 1 }, { address: '10.0.0.2', port: 1, health: 'unknown' }, { address: '10.0.0.3', port: 1, health: 'unhealthy' }, { address: '10.0.0.4', port: 1, health: 'healthy' }] },
        { name: 'b', namespace: 'default', exported: false, endpoints: [{ address: '10.0.0.5', port: 1 }] },
      ],
    },
    new TargetRegistry(),
    stats,
  );
  t.deepEqual(table.endpointsByHealth, { healthy: 2, unknown: 1, unhealthy: 1 });
});
