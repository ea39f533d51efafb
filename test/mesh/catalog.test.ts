import test from 'ava';
import { ErrorCodes, Endpoint, ServiceSpec, TrafficPolicy, decodeCatalogValue, encodeCatalogValue } from '../../mesh/index.js';

const spec = {
  schema: 1,
  name: 'reviews',
  namespace: 'default',
  ports: [{ name: 'http', port: 9080, protocol: 'http' }],
  serviceAccounts: ['spiffe://causeway.internal/ns/default/sa/reviews'],
};

test('decodes a valid value and fills defaults', (t) => {
  const result = decodeCatalogValue(ServiceSpec, '/causeway/v1/services/default/reviews', JSON.stringify(spec));
  t.true(result.ok);
  if (result.ok) {
    t.false(result.value.exported);
    t.deepEqual(result.value.subsets, {});
  }
});

test('a bad value names its key and paths, and does not throw', (t) => {
  const bad = { ...spec, ports: [{ name: 'HTTP', port: 70000 }], serviceAccounts: ['spiffe://x/ns/a'] };
  const result = decodeCatalogValue(ServiceSpec, '/causeway/v1/services/default/reviews', JSON.stringify(bad));
  t.false(result.ok);
  if (!result.ok) {
    t.is(result.error.code, ErrorCodes.catalogValueInvalid);
    t.regex(result.error.message, /^\/causeway\/v1\/services\/default\/reviews: /);
    t.regex(result.error.message, /ports\[0\]\.name: label "HTTP" has upper-case/);
    t.regex(result.error.message, /ports\[0\]\.port: port must be 1-65535/);
    t.regex(result.error.message, /serviceAccounts\[0\]/);
  }
});

test('non-JSON, wrong schema version and unknown fields are refused', (t) => {
  t.false(decodeCatalogValue(ServiceSpec, 'k', '{nope').ok);
  t.false(decodeCatalogValue(ServiceSpec, 'k', JSON.stringify({ ...spec, schema: 2 })).ok);
  t.false(decodeCatalogValue(ServiceSpec, 'k', JSON.stringify({ ...spec, surprise: true })).ok);
  t.false(decodeCatalogValue(ServiceSpec, 'k', Buffer.from([0xff, 0xfe, 0x00])).ok);
});

test("a traffic policy's split names each subset once and gives at least one a weight", (t) => {
  const policy = { schema: 1, name: 'canary', namespace: 'default', service: 'reviews' };
  const key = '/causeway/v1/policies/traffic/default/canary';
  const ok = decodeCatalogValue(TrafficPolicy, key, JSON.stringify({ ...policy, split: [{ subset: 'v1', weight: 90 }, { subset: 'v2', weight: 10 }] }));
  t.true(ok.ok);
  const refused = (split: unknown) => {
    const result = decodeCatalogValue(TrafficPolicy, key, JSON.stringify({ ...policy, split }));
    return result.ok ? '' : result.error.message;
  };
  t.regex(refused([{ subset: 'v1', weight: 1 }, { subset: 'v1', weight: 2 }]), /split: each subset may appear once/);
  t.regex(refused([{ subset: 'v1', weight: 0 }]), /split: at least one subset needs a weight above 0/);
  t.regex(refused([]), /split/);
  t.regex(refused([{ subset: 'V1', weight: 1 }]), /split\[0\]\.subset/);
  t.regex(refused([{ subset: 'v1', weight: -1 }]), /split\[0\]\.weight/);
});

test('writers cannot store what readers refuse', (t) => {
  t.throws(() =>
    encodeCatalogValue(Endpoint, 'k', {
      schema: 1,
      id: 'e1',
      service: 'reviews',
      namespace: 'default',
      cluster: 'east',
      address: '10.0.0.1',
      inboundPort: 0,
      locality: { region: 'r', zone: 'z' },
      identity: 'spiffe://causeway.internal/ns/default/sa/reviews',
    }),
  );
});
