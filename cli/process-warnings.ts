/**
 * Node warns `[DEP0123] Setting the TLS ServerName to an IP address is not permitted by
 * RFC 6066` whenever a TLS client is given an IP as server name — which grpc-js does for
 * every call etcd3 makes to an etcd addressed by IP (`https://127.0.0.1:2379`, as in the
 * README's by-hand set-up). Node already leaves such a name out of the ClientHello and
 * still checks the certificate against the IP, so the line says nothing a user can act
 * on. Only the `causeway` process itself drops it (never a library user's, nor a test
 * runner's): every other warning is printed as Node prints it.
 */
const DROPPED = new Set(['DEP0123']);

export function quietUnactionableWarnings(): void {
  // Removing the listeners removes Node's own printer; this one takes its place.
  process.removeAllListeners('warning');
  process.on('warning', (warning: Error & { code?: string }) => {
    if (warning.code !== undefined && DROPPED.has(warning.code)) return;
    process.stderr.write(`(node:${process.pid}) ${warning.code ? `[${warning.code}] ` : ''}${warning.name}: ${warning.message}\n`);
  });
}
