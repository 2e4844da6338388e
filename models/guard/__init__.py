"""The inference guard: local detection of anomalous inference, with calibrated early warnings.

Public API (see docs/GUARD.md):

* :class:`GuardedInterpreter` wraps a verified interpreter; ``invoke`` returns outputs + verdict;
* :func:`calibrate` fits a :class:`Profile` on clean data for a target false-positive rate;
* :func:`sign_profile` / :func:`open_profile` bind a profile to its model (COSE_Sign1, digest);
* :class:`Policy` / :class:`PolicyConfig`: severities, aggregation, rate limits, fail-safe hook;
* :class:`AgentLink`: events to the agent's Unix socket, buffered while it is away.
"""

from __future__ import annotations

from .calibrate import Outputs, calibrate
from .features import FeatureModel
from .featuretap import FeatureTap, run_features
from .guarded import GuardedInterpreter, GuardedResult, ModelIO, softmax_logits_index
from .link import AgentLink
from .policy import SEVERITIES, Policy, PolicyConfig, Verdict
from .profile import (
    Profile,
    SqueezeConfig,
    check_manifest_binding,
    decode_profile,
    encode_profile,
    open_profile,
    profile_digest,
    sign_profile,
)

__all__ = [
    "SEVERITIES",
    "AgentLink",
    "FeatureModel",
    "FeatureTap",
    "GuardedInterpreter",
    "GuardedResult",
    "ModelIO",
    "Outputs",
    "Policy",
    "PolicyConfig",
    "Profile",
    "SqueezeConfig",
    "Verdict",
    "calibrate",
    "check_manifest_binding",
    "decode_profile",
    "encode_profile",
    "open_profile",
    "profile_digest",
    "run_features",
    "sign_profile",
    "softmax_logits_index",
]
