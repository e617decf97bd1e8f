"""engram-store's Python side.

- ``engram_store.layout``: builds an Engram table layout and the token compression map
  (``python -m engram_store.layout --help``), and computes row ids with numpy.

Kept free of imports so that each module pulls in only what it needs.
"""
