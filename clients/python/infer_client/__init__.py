"""Python client of infer-server (asyncio, protobuf messages from proto/).

    async with Client("tcp://127.0.0.1:8700") as c:
        r = await c.generate("Hello", max_tokens=16)
        print(r.completions[0].text)
        async for chunk in c.stream("Once upon a time", max_tokens=32):
            print(chunk.text, end="", flush=True)

Run clients/python/setup.sh first: it generates infer_client/_pb/.
"""
try:
    from ._pb import inference_pb2, rpc_pb2  # noqa: F401
except ImportError as e:  # pragma: no cover - a clear message beats a bare ImportError
    raise ImportError("infer_client: generated protobuf modules missing or unusable; "
                      "run clients/python/setup.sh (" + str(e) + ")") from e

from .client import (DEFAULT_URL, Client, Connection, RpcError, StatusCode, Stream, make_request,
                     status_name)

__all__ = ["Client", "Connection", "Stream", "RpcError", "StatusCode", "make_request", "status_name",
           "DEFAULT_URL", "inference_pb2", "rpc_pb2"]
