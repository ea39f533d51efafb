import test from 'ava';

// The project targets Node 24 LTS (floor 22.12); `npm test` must run on the Node that
// `npm ci` installs into node_modules, whatever the system Node is.
test('tests run on Node >= 22.12', (t) => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  t.true(major > 22 || (major === 22 && minor >= 12), `running on Node ${process.versions.node}`);
});
