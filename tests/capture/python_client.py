"""A client that knows nothing of fedimds: azure-identity's ManagedIdentityCredential with no
configuration and no environment, i.e. IMDS at 169.254.169.254. Prints {"token": ...}.

usage: python_client.py SCOPE
"""
import json
import sys

from azure.identity import ManagedIdentityCredential


def main() -> int:
    token = ManagedIdentityCredential().get_token(sys.argv[1])
    print(json.dumps({"token": token.token, "expires_on": token.expires_on}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
