"""Review and replay of recorded sessions: index, timeline, integrity, exports.

A *session* is one nbguard login session: the id the login wrapper draws when a
user passes primary login (``login`` and ``mfa`` records carry it), kept in the
user's auth state, handed to the servers they spawn (``spawn``), and put on every
record the guard service writes for requests made with that login (``access``,
``elevation``, ``cell_execution``). Records that belong to a session without
carrying its id are joined to it by the index (see :mod:`nbguard.review.index`).

Framework-free (mypy strict): the guard service's pages, the ``nbguard replay``
command and the notebook ``SessionPlayer`` are thin adapters over this package.
"""
