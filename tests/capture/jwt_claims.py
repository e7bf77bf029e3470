"""Reads a client's JSON output on stdin, finds the access token under KEY and prints the
claims named on the command line as `name=value` lines. Prints no token: only these claims.

usage: jwt_claims.py KEY CLAIM...
"""
import base64
import json
import sys


def main() -> int:
    key, claims = sys.argv[1], sys.argv[2:]
    text = sys.stdin.read()
    try:
        token = json.loads(text)[key]
    except (ValueError, KeyError, TypeError):
        # The body may be an error; it holds no token then, so it is safe to show.
        print(f"no {key!r} in the client's output: {text[:500]!r}", file=sys.stderr)
        return 1
    parts = token.split(".")
    if len(parts) != 3:
        print(f"{key} is not a JWT ({len(parts)} parts)", file=sys.stderr)
        return 1
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    body = json.loads(base64.urlsafe_b64decode(payload))
    for claim in claims:
        print(f"{claim}={body.get(claim, '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
