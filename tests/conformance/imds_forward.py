"""Forwards TCP from LISTEN_HOST:LISTEN_PORT to TO_HOST:TO_PORT, bytes unchanged.

Used only inside tests/suites/conformance.sh's private network namespace: it makes
169.254.169.254:80 reach the daemon on 127.0.0.1, as the deployment's capture rule does, so the
credential chains' IMDS probes and the Rust crate (whose IMDS address is fixed) talk to fedimds
while the daemon keeps its loopback listener (a non-loopback one would demand a caller secret on
every request, which IMDS clients never send).

It writes a line to stderr for every connection it accepts, so a test can count a probe that
only opens a connection and sends nothing (Java azure-identity's).

usage: imds_forward.py LISTEN_HOST LISTEN_PORT TO_HOST TO_PORT
"""

import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def main(listen_host, listen_port, to_host, to_port):
    async def handle(client_reader, client_writer):
        host, port = client_writer.get_extra_info("peername")[:2]
        print(f"connection from {host}:{port}", file=sys.stderr, flush=True)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(to_host, to_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer)
        )
        for writer in (client_writer, upstream_writer):
            writer.close()

    server = await asyncio.start_server(handle, listen_host, listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen_host, listen_port, to_host, to_port = sys.argv[1:5]
    asyncio.run(main(listen_host, int(listen_port), to_host, int(to_port)))
