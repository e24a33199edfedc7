"""Finding what would turn a denial into an allow, by asking the policies again.

Each candidate change (a role through elevation, a grant for this action and
resource, fresh MFA, a trusted device, a network zone the policies name) is
tried against the real policy set; a remedy is reported only if re-evaluation
actually allows. Remedies are minimal: every requirement in one is needed. The
search runs only for denials and costs up to a few dozen evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from nbguard.policy.context import Grant, RequestContext
from nbguard.policy.decision import Remedy, Requirement

Allows = Callable[[RequestContext], bool]

_FRESH = Requirement("fresh_mfa", 0)
_DEVICE = Requirement("trusted_device")


def find_remedies(
    allows: Allows,
    ctx: RequestContext,
    *,
    roles: Iterable[str],
    grant: Grant | None,
    zones: Iterable[str],
) -> tuple[Remedy, ...]:
    """Alternative minimal sets of requirements under which ``allows`` becomes true."""
    routes: list[tuple[Requirement, ...]] = [()]
    routes += [(Requirement("role", role),) for role in sorted(set(roles) - ctx.elevated_roles)]
    if grant is not None and grant not in ctx.grants:
        routes.append((Requirement("grant", grant.action),))
    fixes: list[Requirement] = []
    if ctx.mfa_age_seconds > 0:
        fixes.append(_FRESH)
    if not ctx.device_trusted:
        fixes.append(_DEVICE)
    zone_options: list[Requirement | None] = [None]
    zone_options += [Requirement("network_zone", z) for z in zones if z != ctx.network_zone]

    found: list[tuple[Requirement, ...]] = []
    for route in routes:
        base = _apply(ctx, route, grant)
        for zone in zone_options:
            candidate = fixes + ([zone] if zone else [])
            if not allows(_apply(base, candidate, grant)):
                continue
            needed = _minimise(allows, base, candidate, grant)
            if _FRESH in needed:
                max_age = _max_mfa_age(allows, base, needed, grant)
                needed = [Requirement("fresh_mfa", max_age) if r == _FRESH else r for r in needed]
            found.append((*route, *needed))
            if zone is None or zone not in needed:
                break  # another zone would only add a requirement
    return tuple(Remedy(reqs) for reqs in _drop_supersets(found))


def _apply(ctx: RequestContext, reqs: Iterable[Requirement], grant: Grant | None) -> RequestContext:
    changes: dict[str, object] = {}
    for req in reqs:
        if req.kind == "role":
            changes["elevated_roles"] = ctx.elevated_roles | {str(req.value)}
        elif req.kind == "grant" and grant is not None:
            changes["grants"] = ctx.grants | {grant}
        elif req.kind == "fresh_mfa":
            changes["mfa_age_seconds"] = int(req.value)
            if ctx.mfa_method == "none":
                changes["mfa_method"] = "totp"
        elif req.kind == "trusted_device":
            changes["device_trusted"] = True
        elif req.kind == "network_zone":
            changes["network_zone"] = str(req.value)
    return replace(ctx, **changes) if changes else ctx  # type: ignore[arg-type]


def _minimise(
    allows: Allows, base: RequestContext, reqs: Sequence[Requirement], grant: Grant | None
) -> list[Requirement]:
    needed = list(reqs)
    for req in list(needed):
        trial = [r for r in needed if r != req]
        if allows(_apply(base, trial, grant)):
            needed = trial
    return needed


def _max_mfa_age(
    allows: Allows, base: RequestContext, needed: Sequence[Requirement], grant: Grant | None
) -> int:
    """The oldest MFA age that still allows, by bisection below the current age."""
    others = [r for r in needed if r != _FRESH]
    low, high = 0, max(base.mfa_age_seconds - 1, 0)
    while low < high:
        middle = (low + high + 1) // 2
        if allows(_apply(base, [*others, Requirement("fresh_mfa", middle)], grant)):
            low = middle
        else:
            high = middle - 1
    return low


def _drop_supersets(found: list[tuple[Requirement, ...]]) -> list[tuple[Requirement, ...]]:
    """Keep only remedies that do not include another remedy's requirements."""
    kept: list[tuple[Requirement, ...]] = []
    for reqs in sorted(found, key=len):
        as_set = set(reqs)
        if any(set(other) <= as_set for other in kept):
            continue
        kept.append(reqs)
    return kept
