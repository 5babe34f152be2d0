"""Nerve, the meta-atom: its language (schema), how it decides (decision), how it learns (training)."""

from .decision import MIN_ANSWERS, MIN_DECISIONS, SUPPRESS_CONFIDENCE, decide, ready, rule
from .schema import BUILTIN_PREFIX, DECIDING_ACTIONS, HOSTS, OWN_FIELDS, actions, prefix_of, spec, state_of
from .training import ANSWER_WEIGHT, train, training_history
