// The fault steps on a two-service topology — `web` (the demo echo app on 8080) and
// `client`, both on the default network — shared by the netns tier
// (test/topologies/runner.test.ts) and the Docker tier (test/docker/topologies.test.ts),
// so both engines are held to the same steps. A partition and 100 % loss make the other
// side silent (a connect times out; nothing refuses), heal brings it back.

const silentConnect = (host: string, port: number) =>
  `const s = require('node:net').connect({ host: '${host}', port: ${port}, timeout: 1000 }); s.once('connect', () => { console.log('connected ' + s.localAddress + ' to ' + s.remoteAddress); process.exit(0); }); s.once('timeout', () => { console.log('silent'); process.exit(3); }); s.once('error', (e) => { console.log(e.code); process.exit(4); });`;

export const FAULT_STEPS_SCENARIO = `steps:
  - call: { from: client, url: "http://web:8080/", requests: 3, minSuccesses: 3 }
  - partition: { between: [client, web] }
  - exec: { in: client, command: [node, -e, "${silentConnect('web', 8080)}"], exitCode: 3, outputMatches: "silent" }
  - name: the partition holds both ways
    exec: { in: web, command: [node, -e, "${silentConnect('client', 9)}"], exitCode: 3, outputMatches: "silent" }
  - heal: { between: [web, client] }
  - call: { from: client, url: "http://web:8080/", requests: 3, minSuccesses: 3 }
  - loss: { on: web, percent: 100 }
  - exec: { in: client, command: [node, -e, "${silentConnect('web', 8080)}"], exitCode: 3, outputMatches: "silent" }
  - heal: { on: web }
  - call: { from: client, url: "http://web:8080/", requests: 3, minSuccesses: 3 }
  - partition: { between: [client, default] }
  - heal:
`;

/** What the report of {@link FAULT_STEPS_SCENARIO} must say. */
export const FAULT_STEPS_REPORT: readonly RegExp[] = [
  /^12 passed, 0 failed, 0 skipped$/m,
  /partition between client and web: packets dropped in client \(nft table causeway_partition_[0-9a-f]{12}\)/,
  /100% loss on web: each packet in or out of eth0 dropped/,
  /healed: partition between client and network default/,
];
