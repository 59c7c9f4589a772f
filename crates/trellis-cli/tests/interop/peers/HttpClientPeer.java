// Java's built-in HttpClient, for the interoperability suite. It offers `Upgrade: h2c`
// on every http:// request by default, as many Java services do.
//
//     java HttpClientPeer.java BASE_URL FILE_NAME FILE_SHA256
//
// GETs BASE_URL/files/FILE_NAME and checks the body's SHA-256; POSTs a body of its own
// to BASE_URL/upload and checks the digest the origin computed. Prints one line per
// case that passed ("ok CASE ...") and exits 1 at the first that did not.

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.HexFormat;

public class HttpClientPeer {
    static void check(String name, boolean condition, String detail) {
        if (!condition) {
            System.out.println("FAILED " + name + ": " + detail);
            System.exit(1);
        }
    }

    static String sha256(byte[] data) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(data));
    }

    public static void main(String[] args) throws Exception {
        String base = args[0];
        HttpClient client = HttpClient.newBuilder()
                .version(HttpClient.Version.HTTP_2)
                .connectTimeout(Duration.ofSeconds(10))
                .build();
        Duration timeout = Duration.ofSeconds(60);

        for (int i = 0; i < 3; i++) {
            HttpRequest get = HttpRequest.newBuilder(URI.create(base + "/files/" + args[1]))
                    .timeout(timeout).build();
            HttpResponse<byte[]> response = client.send(get, HttpResponse.BodyHandlers.ofByteArray());
            check("get", response.statusCode() == 200, "status " + response.statusCode());
            String digest = sha256(response.body());
            check("get", digest.equals(args[2]), "body sha256 " + digest);
            System.out.println("ok get " + response.version() + " " + response.body().length + " " + digest);
        }

        byte[] body = new byte[3 * 1024 * 1024 + 17];
        for (int i = 0; i < body.length; i++) {
            body[i] = (byte) (i * 31 + i / 251);
        }
        HttpRequest post = HttpRequest.newBuilder(URI.create(base + "/upload"))
                .timeout(timeout)
                .POST(HttpRequest.BodyPublishers.ofByteArray(body))
                .build();
        HttpResponse<String> response = client.send(post, HttpResponse.BodyHandlers.ofString());
        check("post", response.statusCode() == 200, "status " + response.statusCode());
        String expected = "{\"bytes\": " + body.length + ", \"sha256\": \"" + sha256(body) + "\"}";
        check("post", response.body().equals(expected), response.body() + " instead of " + expected);
        System.out.println("ok post " + response.version() + " " + body.length);
    }
}
