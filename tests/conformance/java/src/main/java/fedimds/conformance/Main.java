package fedimds.conformance;

import com.azure.core.credential.AccessToken;
import com.azure.core.credential.TokenCredential;
import com.azure.core.credential.TokenRequestContext;
import com.azure.identity.DefaultAzureCredentialBuilder;
import com.azure.identity.ManagedIdentityCredentialBuilder;
import java.time.Duration;

/**
 * {@code conformance-java <scope>}: asks the real Java azure-identity (through msal4j) for a token
 * and prints one JSON line {@code {"token": "...", "expires_on": <epoch s>}} per call; on failure
 * it prints the error and its causes on stderr and exits 1 (2 for a usage error).
 * tests/conformance/python/test_azure_identity_java.py runs it, as test_azure_identity_rs.py runs
 * the Rust client.
 *
 * <p>msal4j picks the managed-identity source from the environment (IDENTITY_ENDPOINT +
 * IDENTITY_HEADER: App Service; with IDENTITY_SERVER_THUMBPRINT: Service Fabric; otherwise IMDS, at
 * AZURE_POD_IDENTITY_AUTHORITY_HOST when set, else 169.254.169.254). Options:
 *
 * <ul>
 *   <li>{@code --credential managed} (the default) or {@code default}: ManagedIdentityCredential,
 *       or DefaultAzureCredential (whose IMDS probe is a bare TCP connect, no HTTP request);
 *   <li>{@code --client-id ID}, {@code --object-id ID}, {@code --resource-id ID}: a user-assigned
 *       identity (managed only);
 *   <li>{@code --repeat N}: N getToken calls on one credential (a line each), to observe its cache.
 * </ul>
 */
public final class Main {
    private static final String USAGE =
            "usage: conformance-java <scope> [--credential managed|default]"
                    + " [--client-id ID | --object-id ID | --resource-id ID] [--repeat N]";

    private static final class UsageError extends Exception {
        UsageError(String message) {
            super(message);
        }
    }

    private String scope;
    private String credential = "managed";
    private String idKind;
    private String id;
    private int repeat = 1;

    private void parse(String[] argv) throws UsageError {
        for (int i = 0; i < argv.length; i++) {
            String arg = argv[i];
            switch (arg) {
                case "--credential":
                case "--client-id":
                case "--object-id":
                case "--resource-id":
                case "--repeat":
                    if (i + 1 >= argv.length) {
                        throw new UsageError(arg + " needs a value");
                    }
                    String value = argv[++i];
                    if (arg.equals("--credential")) {
                        if (!value.equals("managed") && !value.equals("default")) {
                            throw new UsageError("--credential: '" + value + "' is neither managed nor default");
                        }
                        credential = value;
                    } else if (arg.equals("--repeat")) {
                        try {
                            repeat = Integer.parseInt(value);
                        } catch (NumberFormatException e) {
                            repeat = 0;
                        }
                        if (repeat < 1) {
                            throw new UsageError("--repeat: '" + value + "' is not a positive count");
                        }
                    } else {
                        idKind = arg;
                        id = value;
                    }
                    break;
                case "-h":
                case "--help":
                    throw new UsageError(USAGE);
                default:
                    if (arg.startsWith("-")) {
                        throw new UsageError("unknown option " + arg + "\n" + USAGE);
                    } else if (scope == null) {
                        scope = arg;
                    } else {
                        throw new UsageError("unexpected argument " + arg + "\n" + USAGE);
                    }
            }
        }
        if (scope == null) {
            throw new UsageError(USAGE);
        }
        if (credential.equals("default") && id != null) {
            throw new UsageError("DefaultAzureCredential takes its identity from AZURE_CLIENT_ID, not a flag");
        }
    }

    private TokenCredential build() {
        if (credential.equals("default")) {
            return new DefaultAzureCredentialBuilder().build();
        }
        ManagedIdentityCredentialBuilder builder = new ManagedIdentityCredentialBuilder();
        if (id != null) {
            switch (idKind) {
                case "--client-id":
                    builder.clientId(id);
                    break;
                case "--object-id":
                    builder.objectId(id);
                    break;
                default:
                    builder.resourceId(id);
                    break;
            }
        }
        return builder.build();
    }

    /** A JSON string: the token is base64url and dots, but quote it properly all the same. */
    private static String json(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }

    /** The error and each of its causes, one line each: azure-identity wraps msal4j's message. */
    private static void report(Throwable error) {
        for (Throwable t = error; t != null; t = t.getCause()) {
            System.err.println(t.getClass().getName() + ": " + t.getMessage());
            if (t.getCause() == t) {
                break;
            }
        }
    }

    public static void main(String[] argv) {
        Main main = new Main();
        try {
            main.parse(argv);
        } catch (UsageError e) {
            System.err.println(e.getMessage());
            System.exit(2);
        }
        int status = 0;
        try {
            TokenCredential credential = main.build();
            TokenRequestContext request = new TokenRequestContext().addScopes(main.scope);
            for (int i = 0; i < main.repeat; i++) {
                // msal4j retries IMDS for a while; a test that fails should fail within its timeout.
                AccessToken token = credential.getToken(request).block(Duration.ofSeconds(60));
                System.out.println("{\"token\": " + json(token.getToken())
                        + ", \"expires_on\": " + token.getExpiresAt().toEpochSecond() + "}");
            }
        } catch (RuntimeException e) {
            report(e);
            status = 1;
        }
        System.out.flush();
        // Reactor's and netty's threads would keep the JVM up for seconds.
        System.exit(status);
    }
}
