// A JVM workload's TLS client, as a Java service would hold it: its key, chain and
// trusted roots from one PKCS#12 keystore written by `causeway ca issue --format pkcs12`.
// Usage: java MtlsClient.java <keystore.p12> <password-file> <host> <port> <sni> <path>
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.security.KeyStore;
import java.util.List;
import javax.net.ssl.*;

public class MtlsClient {
  public static void main(String[] args) throws Exception {
    char[] password = Files.readAllLines(Path.of(args[1])).get(0).toCharArray();
    KeyStore store = KeyStore.getInstance("PKCS12");
    try (InputStream in = Files.newInputStream(Path.of(args[0]))) { store.load(in, password); }
    KeyManagerFactory keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
    keys.init(store, password);
    // The roots are trustedCertEntry items of the same keystore.
    TrustManagerFactory trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
    trust.init(store);
    SSLContext context = SSLContext.getInstance("TLSv1.3");
    context.init(keys.getKeyManagers(), trust.getTrustManagers(), null);
    try (SSLSocket socket = (SSLSocket) context.getSocketFactory().createSocket(args[2], Integer.parseInt(args[3]))) {
      SSLParameters params = socket.getSSLParameters();
      params.setServerNames(List.of(new SNIHostName(args[4])));
      socket.setSSLParameters(params);
      socket.startHandshake();
      OutputStream out = socket.getOutputStream();
      out.write(("GET " + args[5] + " HTTP/1.1\r\nHost: " + args[4] + "\r\nConnection: close\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
      out.flush();
      System.out.println("protocol " + socket.getSession().getProtocol());
      System.out.print(new String(socket.getInputStream().readAllBytes(), StandardCharsets.UTF_8));
    }
  }
}
