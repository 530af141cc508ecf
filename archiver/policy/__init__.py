"""Policies: decide per image whether generative compression is safe (see docs/policies.md)."""

from ..errors import PolicyError
from .classifiers import ClassifierResult
from .engine import DEFAULT_POLICY, Decision, Policy, load_policy, parse_policy_text

__all__ = ["ClassifierResult", "DEFAULT_POLICY", "Decision", "Policy", "PolicyError", "load_policy", "parse_policy_text"]
