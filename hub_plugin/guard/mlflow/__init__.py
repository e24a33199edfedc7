"""The model-registry gateway: MLflow's REST API, decided by nbguard, forwarded upstream.

Notebooks use the unmodified MLflow client with ``MLFLOW_TRACKING_URI`` pointing
here (the spawner sets it). Each supported endpoint maps to a policy action on a
model or model version (:mod:`.endpoints`); attributes that drive the policy come
from the registry's admin-reserved tags and the service's settings
(:mod:`.attributes`); allowed calls go to the admin's tracking server with the
service's own credentials (:mod:`.upstream`). See docs/model-registry.md.
"""
