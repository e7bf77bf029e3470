// Command conformance-go asks the real Go azidentity for a token and prints one JSON line
// {"token": "...", "expires_on": <epoch s>} per call; on failure it prints azidentity's error on
// stderr and exits 1 (2 for a usage error). tests/conformance/python/test_azure_identity_go.py
// runs it, the same way test_azure_identity_rs.py runs the Rust client.
//
// azidentity picks its managed-identity source from the usual environment (IDENTITY_ENDPOINT +
// IDENTITY_HEADER: App Service; + IDENTITY_SERVER_THUMBPRINT: Service Fabric; otherwise IMDS at
// the fixed 169.254.169.254: it never reads AZURE_POD_IDENTITY_AUTHORITY_HOST). Options:
//
//   - --credential managed (the default): ManagedIdentityCredential, which never probes;
//     --credential default: DefaultAzureCredential, whose ManagedIdentityCredential first sends
//     IMDS a header-less probe (docs/client-protocols.md, "Go azidentity"), unless
//     AZURE_TOKEN_CREDENTIALS names ManagedIdentityCredential alone;
//   - --client-id ID, --object-id ID, --resource-id ID: a user-assigned identity (managed only;
//     DefaultAzureCredential takes AZURE_CLIENT_ID);
//   - --repeat N: N get_token calls on one credential (a line each), to observe its cache.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

const usage = "usage: conformance-go <scope> [--credential managed|default] [--client-id ID | --object-id ID | --resource-id ID] [--repeat N]"

type args struct {
	scope      string
	credential string
	id         azidentity.ManagedIDKind
	repeat     int
}

func parseArgs(argv []string) (args, error) {
	a := args{credential: "managed", repeat: 1}
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		value := func() (string, error) {
			if i+1 >= len(argv) {
				return "", fmt.Errorf("%s needs a value", arg)
			}
			i++
			return argv[i], nil
		}
		var v string
		var err error
		switch arg {
		case "--credential", "--client-id", "--object-id", "--resource-id", "--repeat":
			if v, err = value(); err != nil {
				return a, err
			}
		}
		switch {
		case arg == "--credential":
			if v != "managed" && v != "default" {
				return a, fmt.Errorf("--credential: %q is neither managed nor default", v)
			}
			a.credential = v
		case arg == "--client-id":
			a.id = azidentity.ClientID(v)
		case arg == "--object-id":
			a.id = azidentity.ObjectID(v)
		case arg == "--resource-id":
			a.id = azidentity.ResourceID(v)
		case arg == "--repeat":
			if a.repeat, err = strconv.Atoi(v); err != nil || a.repeat < 1 {
				return a, fmt.Errorf("--repeat: %q is not a positive count", v)
			}
		case arg == "-h" || arg == "--help":
			return a, errors.New(usage)
		case len(arg) > 0 && arg[0] == '-':
			return a, fmt.Errorf("unknown option %s\n%s", arg, usage)
		case a.scope == "":
			a.scope = arg
		default:
			return a, fmt.Errorf("unexpected argument %s\n%s", arg, usage)
		}
	}
	if a.scope == "" {
		return a, errors.New(usage)
	}
	if a.credential == "default" && a.id != nil {
		return a, errors.New("DefaultAzureCredential takes its identity from AZURE_CLIENT_ID, not a flag")
	}
	return a, nil
}

func credential(a args) (azcore.TokenCredential, error) {
	if a.credential == "default" {
		return azidentity.NewDefaultAzureCredential(nil)
	}
	return azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: a.id})
}

func main() {
	a, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cred, err := credential(a)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	for range a.repeat {
		// azidentity retries IMDS for minutes; a test that fails should fail within its timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		token, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{a.scope}})
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := out.Encode(map[string]any{"token": token.Token, "expires_on": token.ExpiresOn.Unix()}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
