"""The tamper-evident ledger: hash-chained, signed, durable, verifiable offline."""
