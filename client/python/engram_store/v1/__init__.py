"""Generated gRPC stubs of the ``engram_store.v1`` protocol (``proto/engram_store/v1/store.proto``).

Do not edit ``store_pb2*.py``: regenerate them with ``python client/python/scripts/gen_stubs.py``
(CI checks them with ``--check``). Use :class:`engram_store.Client` rather than these directly.
"""
