#!/usr/bin/env python3
"""A TLS-terminating TCP proxy on loopback, for the TLS benchmark
(scripts/bench-tls): each `LISTEN:TARGET` pair accepts TLS on
127.0.0.1:LISTEN with the given certificate and forwards the plain bytes to
127.0.0.1:TARGET (moto, Synapse). The functions then meet a TLS handshake
on each new connection, as they do in AWS.

Usage: bench/tls_proxy.py CERT KEY LISTEN:TARGET [LISTEN:TARGET ...]
"""

import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def forwarder(target):
    async def forward(client_reader, client_writer):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

    return forward


async def main(cert, key, pairs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    servers = []
    for pair in pairs:
        listen, target = (int(port) for port in pair.split(":"))
        servers.append(await asyncio.start_server(forwarder(target), "127.0.0.1", listen, ssl=context))
    print("tls_proxy: ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
