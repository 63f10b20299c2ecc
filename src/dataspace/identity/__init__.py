"""Node identity: Ed25519 keys, signed notes, (later) signed requests and membership lists."""
