"""The guard service's model-registry settings: which MLflow server, with which
credentials, and the policy attributes of models that carry none.

A mixin of :class:`~nbguard.hub_plugin.guard.app.GuardService` (so admins write
``c.GuardService.mlflow_*``); kept here, beside the gateway they configure.
"""

from __future__ import annotations

from typing import Any

from traitlets import Dict, Float, HasTraits, List, Unicode, validate

from nbguard.errors import ConfigError


class MLflowSettings(HasTraits):  # type: ignore[misc]
    """``GuardService.mlflow_*``: the model-registry gateway's configuration."""

    log: Any

    mlflow_tracking_uri = Unicode(
        "",
        help="""The MLflow tracking server the model-registry gateway fronts, e.g.
        ``http://mlflow.internal:5000`` (started with ``--serve-artifacts``).

        Empty (the default): no gateway; ``<prefix>mlflow/...`` answers 404. When set,
        notebooks reach the registry only through the guard service
        (``MLFLOW_TRACKING_URI`` is set by the spawner), every call is decided and
        recorded, and the service calls this server with its own credentials
        (``mlflow_token_file`` or ``mlflow_basic_auth_file``). Users must not be able
        to reach this server directly (keep it on the hub's network). See
        docs/model-registry.md.""",
    ).tag(config=True)

    mlflow_token_file = Unicode(
        "",
        help="""File holding the bearer token the gateway sends to the tracking server
        (``Authorization: Bearer ...``). Empty: none. Readable by the service's OS
        user only; never sent to the user zone. Exclusive with
        ``mlflow_basic_auth_file``.""",
    ).tag(config=True)

    mlflow_basic_auth_file = Unicode(
        "",
        help="""File holding ``user:password`` for the tracking server's basic auth
        (MLflow's ``basic-auth`` app). Empty: none. Exclusive with
        ``mlflow_token_file``.""",
    ).tag(config=True)

    mlflow_timeout = Float(
        30.0,
        help="""Seconds the gateway waits for the tracking server to connect and answer a
        metadata call (artifact transfers may take longer). A server that does not
        answer in time is reported to the client as 503 ``TEMPORARILY_UNAVAILABLE``.""",
    ).tag(config=True)

    mlflow_cache_seconds = Float(
        5.0,
        help="""Seconds a registered model's policy attributes (its ``nbguard.*`` tags) are
        cached by each replica (default 5). The gateway forgets a model at once when it
        changes the model's tags itself; for calls decided before they are forwarded
        (writes), a change made by another replica or directly in MLflow counts after at
        most this long. Reads are always decided on the registry's answer; for this long
        the entity a read was decided on lets the next read be decided early, beside the
        registry call (see docs/model-registry.md). 0: no cache.""",
    ).tag(config=True)

    mlflow_default_sensitivity = Unicode(
        "confidential",
        help="""Sensitivity of a model created through the gateway (its
        ``nbguard.sensitivity`` tag), and of one without the tag. An admin changes a
        model's sensitivity by setting the tag (only ``guard.admin`` may) or in
        ``mlflow_models``.""",
    ).tag(config=True)

    mlflow_default_environment = Unicode(
        "train",
        help="""Environment of a model created through the gateway (``nbguard.environment``)
        and of one without the tag. A version's environment follows its stage and
        aliases: ``Production`` or an alias in ``mlflow_prod_aliases`` is ``prod``,
        ``Staging`` is ``test``.""",
    ).tag(config=True)

    mlflow_default_team = Unicode(
        "unassigned",
        help="""Team of a model without an ``nbguard.team`` tag (one created outside the
        gateway). A model created through the gateway belongs to its creator's first
        team (sorted by name).""",
    ).tag(config=True)

    mlflow_prod_aliases = List(
        Unicode(),
        default_value=["champion", "production", "prod"],
        help="""Aliases that put a version in ``prod``: setting one is a promotion to prod
        (fresh MFA, a grant, never by the version's registrant, in the default
        policies).""",
    ).tag(config=True)

    mlflow_models = Dict(
        help="""Policy attributes per registered model, over its tags:
        ``{"fraud": {"team": "risk", "sensitivity": "restricted", "environment": "prod",
        "owner": "bob"}}`` (each key optional). For models whose attributes an admin
        keeps in configuration rather than in the registry.""",
    ).tag(config=True)

    @validate("mlflow_default_sensitivity", "mlflow_default_environment")
    def _mlflow_vocabulary(self, proposal: Any) -> str:
        from nbguard.policy.vocabulary import ENVIRONMENTS, SENSITIVITIES

        name = proposal["trait"].name
        choices = SENSITIVITIES if name.endswith("sensitivity") else ENVIRONMENTS
        value = str(proposal["value"])
        if value not in choices:
            raise ConfigError(
                f"GuardService.{name} must be one of {', '.join(choices)}, not {value!r}"
            )
        return value

    def model_gateway(self) -> Any:
        """The MLflow gateway's state, or None when no tracking server is configured."""
        if not self.mlflow_tracking_uri:
            return None
        from nbguard.hub_plugin.guard.mlflow.attributes import ModelSettings
        from nbguard.hub_plugin.guard.mlflow.gateway import ModelGateway
        from nbguard.hub_plugin.guard.mlflow.upstream import MLflowUpstream, read_credentials

        authorization = read_credentials(self.mlflow_token_file, self.mlflow_basic_auth_file)
        upstream = MLflowUpstream(
            self.mlflow_tracking_uri, authorization=authorization, timeout=self.mlflow_timeout
        )
        settings = ModelSettings(
            default_sensitivity=self.mlflow_default_sensitivity,
            default_environment=self.mlflow_default_environment,
            default_team=self.mlflow_default_team,
            prod_aliases=frozenset(self.mlflow_prod_aliases),
            models=dict(self.mlflow_models),
        )
        self.log.info("nbguard guard: model registry gateway to %s", self.mlflow_tracking_uri)
        return ModelGateway(upstream, settings, cache_seconds=self.mlflow_cache_seconds)
