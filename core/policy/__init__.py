"""Cedar policies for nbguard: schema, loading, decisions, remedies and the decision cache.

The public surface is :class:`PolicyEngine`, :class:`RequestContext`,
:class:`Decision` and :class:`EntityRef`; import them from here.
"""

from nbguard.policy.context import Grant, RequestContext
from nbguard.policy.decision import Decision, Remedy, Requirement
from nbguard.policy.engine import DEFAULT_POLICY_DIR, SCHEMA_PATH, PolicyEngine
from nbguard.policy.refs import EntityRef

__all__ = [
    "DEFAULT_POLICY_DIR",
    "SCHEMA_PATH",
    "Decision",
    "EntityRef",
    "Grant",
    "PolicyEngine",
    "Remedy",
    "RequestContext",
    "Requirement",
]
