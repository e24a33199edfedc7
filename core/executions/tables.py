"""The execution store's tables (prefix ``nbguard_exec_``).

Constraints carry what replicas must not break even if code is wrong: one
stream per (user, witness, kernel, instance) and one record per position in a
stream, so a retried batch is stored once whichever replica gets it. Records
repeat their stream's user, witness and kernel so that pairing the witnesses
is one indexed query.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()
_ID = 128
_NAME = 255

#: Pairing states of a record: waiting for the other witness, paired with it,
#: alerted on (no partner within the grace period), or not pairable (a kernel
#: record of code run without an ``execute_request``).
PENDING, PAIRED, ALERTED, UNPAIRABLE = "pending", "paired", "alerted", "none"

streams_table = Table(
    "nbguard_exec_streams",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user", String(_NAME), nullable=False),
    Column("server", String(_NAME), nullable=False),
    Column("witness", String(8), nullable=False),
    Column("kernel_id", String(_ID), nullable=False),
    Column("instance", String(_ID), nullable=False),
    # Every seq up to this one is present or was alerted on as missing.
    Column("checked_through", BigInteger, nullable=False),
    Column("created", Float, nullable=False),
    UniqueConstraint("user", "witness", "kernel_id", "instance", name="nbguard_exec_one_stream"),
)
records_table = Table(
    "nbguard_exec_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("stream_id", Integer, ForeignKey(streams_table.c.id), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("user", String(_NAME), nullable=False),
    Column("witness", String(8), nullable=False),
    Column("kernel_id", String(_ID), nullable=False),
    Column("msg_id", String(_ID), nullable=False),
    Column("cell_id", String(_ID), nullable=False),
    Column("code_sha256", String(64), nullable=False),
    Column("status", String(8), nullable=False),
    Column("privileged", Boolean, nullable=False),
    Column("claimed_privileged", Boolean, nullable=True),
    # The witness's own clock (user zone), and the guard's when it arrived.
    Column("reported", Float, nullable=False),
    Column("arrived", Float, nullable=False),
    Column("pair_state", String(8), nullable=False),
    UniqueConstraint("stream_id", "seq", name="nbguard_exec_one_record_per_seq"),
    Index("nbguard_exec_records_to_pair", "pair_state", "arrived"),
    Index("nbguard_exec_records_by_message", "user", "kernel_id", "msg_id"),
)
alerts_table = Table(
    "nbguard_exec_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("user", String(_NAME), nullable=False),
    Column("server", String(_NAME), nullable=False),
    Column("witness", String(8), nullable=False),
    Column("kernel_id", String(_ID), nullable=False),
    Column("instance", String(_ID), nullable=False),
    Column("msg_id", String(_ID), nullable=False),
    Column("first_seq", BigInteger, nullable=True),
    Column("last_seq", BigInteger, nullable=True),
    Column("message", Text, nullable=False),
    Column("created", Float, nullable=False),
    Index("nbguard_exec_alerts_by_created", "created"),
)
#: One row (id 1): a cross-check pass holds it, so replicas take turns.
passes_table = Table(
    "nbguard_exec_passes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_pass", Float, nullable=False),
)
