"""Service functions: the one set of operations behind the CLI, the HTTP API and the client.

Each function takes an opened :class:`~dataspace.services.node.Node` and an ``actor`` (who asked),
does its work in one store transaction together with its ledger entry, and raises only
:class:`~dataspace.errors.DataspaceError`.
"""
