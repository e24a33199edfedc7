"""Cell executions as the two witnesses report them: checked records, their store, and
the cross-check that raises an alert for what only one witness saw."""
