"""One process of the benchmark's cron fleet (tests/bench/src/economy.rs): a short-lived job that
needs tokens for a few resources, gets them with the real azure-identity, and exits.

    cron_job.py direct RESOURCE...   # both hops itself: ManagedIdentityCredential for the
                                     # exchange audience at IMDS, then ClientAssertionCredential
                                     # for the target tenant at Entra
    cron_job.py fedimds RESOURCE...  # ManagedIdentityCredential against fedimds

Environment: AZURE_POD_IDENTITY_AUTHORITY_HOST (IMDS, or fedimds); for `direct` also
BENCH_ENTRA (the simulator's Entra, http on loopback), BENCH_TENANT, BENCH_APP_ID and
BENCH_MI_CLIENT_ID. Prints `first` once the first token is in hand and `done` after the last;
tokens are never printed.
"""

import os
import sys

from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ClientAssertionCredential, ManagedIdentityCredential

EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"


class LoopbackHttp(RequestsTransport):
    """azure-identity accepts only an https authority; the simulator's Entra is plain http on
    loopback. The credential is given the https URL and this sends it as http: nothing else
    about the requests changes."""

    def send(self, request, **kwargs):
        request.url = request.url.replace("https://", "http://", 1)
        return super().send(request, **kwargs)


def credential(mode):
    if mode == "fedimds":
        return ManagedIdentityCredential()
    if mode == "direct":
        mi = ManagedIdentityCredential(client_id=os.environ["BENCH_MI_CLIENT_ID"])
        return ClientAssertionCredential(
            tenant_id=os.environ["BENCH_TENANT"],
            client_id=os.environ["BENCH_APP_ID"],
            func=lambda: mi.get_token(EXCHANGE_SCOPE).token,
            authority=os.environ["BENCH_ENTRA"].replace("http://", "https://", 1),
            transport=LoopbackHttp(),
        )
    sys.exit(f"cron_job.py: unknown mode {mode!r}; use direct or fedimds")


def main():
    mode, resources = sys.argv[1], sys.argv[2:]
    cred = credential(mode)
    for i, resource in enumerate(resources):
        token = cred.get_token(resource.rstrip("/") + "/.default")
        if not token.token:
            sys.exit(f"cron_job.py: an empty token for {resource}")
        if i == 0:
            print("first", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
