"""The retry policy: pure functions from a request, a model and settings to a decision."""

from serving.policy.context import InvalidFieldError
from serving.policy.decision import Decision, PlannedRetry, decide, decide_batch

__all__ = ["Decision", "InvalidFieldError", "PlannedRetry", "decide", "decide_batch"]
