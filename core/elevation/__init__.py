"""Time-bound elevation: requests, approvals, grants, break-glass and locks."""
