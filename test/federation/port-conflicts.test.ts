import test from 'ava';
import fc from 'fast-check';
import { PortConflictBoard } from '../../federation/index.js';

const http = [{ name: 'http', port: 9080, protocol: 'http' as const }];
const grpc = [{ name: 'grpc', port: 9090, protocol: 'grpc' as const }];

test('the oldest export wins; a later export with other ports is in conflict, one with the same ports is not', (t) => {
  const board = new PortConflictBoard();
  board.claim('west', 'reviews.default', { ports: http, exportedAt: '2026-01-02T00:00:00Z' });
  t.deepEqual(board.claim('east', 'reviews.default', { ports: grpc, exportedAt: '2026-01-03T00:00:00Z' }), ['east']);
  board.claim('south', 'reviews.default', { ports: [{ ...http[0]!, targetPort: 8080 }], exportedAt: '2026-01-04T00:00:00Z' });
  t.regex(board.conflictFor('east', 'reviews.default') ?? '', /cluster west's older export/);
  t.is(board.conflictFor('west', 'reviews.default'), undefined);
  t.is(board.conflictFor('south', 'reviews.default'), undefined, 'targetPort is the exporting cluster’s own business');
  t.deepEqual(board.conflicts(), [{ service: 'reviews.default', winner: 'west', winnerExportedAt: '2026-01-02T00:00:00Z', losers: ['east'] }]);
  // The winner leaves: east is now oldest, and south (http) loses to it.
  t.deepEqual(board.claim('west', 'reviews.default', undefined).sort(), ['east', 'south']);
  t.is(board.conflictFor('east', 'reviews.default'), undefined);
  t.deepEqual(board.losingServices('south'), ['reviews.default']);
});

test('claim() reports exactly the clusters whose conflict changed, and losingServices() agrees with conflictFor()', (t) => {
  const clusters = ['a', 'b', 'c', 'd'];
  const services = ['s1.ns', 's2.ns'];
  const op = fc.record({
    cluster: fc.constantFrom(...clusters),
    service: fc.constantFrom(...services),
    value: fc.option(fc.record({ ports: fc.constantFrom(http, grpc), day: fc.integer({ min: 1, max: 3 }) }), { nil: undefined }),
  });
  t.notThrows(() =>
    fc.assert(
    fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
      const board = new PortConflictBoard();
      const snapshot = (service: string) => new Map(clusters.map((c) => [c, board.conflictFor(c, service)]));
      for (const { cluster, service, value } of ops) {
        const before = snapshot(service);
        const changed = board.claim(cluster, service, value && { ports: value.ports, exportedAt: `2026-01-0${value.day}T00:00:00Z` });
        const after = snapshot(service);
        const expected = clusters.filter((c) => before.get(c) !== after.get(c));
        if (JSON.stringify([...changed].sort()) !== JSON.stringify(expected)) return false;
        for (const c of clusters) {
          const losing = board.losingServices(c);
          for (const s of services) if (losing.includes(s) !== (board.conflictFor(c, s) !== undefined)) return false;
        }
      }
      return true;
    }),
  ),
  );
});
