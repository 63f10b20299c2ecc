"""The node's verifiable log: RFC 9162 Merkle tree, C2SP checkpoints, audit and proofs.

- :mod:`~dataspace.ledger.merkle` — pure tree hashing, proofs and their verification
- :mod:`~dataspace.ledger.checkpoint` — tlog-checkpoint bodies carried as signed notes
- :mod:`~dataspace.ledger.log` — the store-backed append-only log (caller owns the transaction)
- :mod:`~dataspace.ledger.audit` — ``ledger verify``: recompute everything, report tampering
- :mod:`~dataspace.ledger.proof` — offline inclusion / consistency proof bundles

See docs/ledger.md for the formats and the threat model.
"""
