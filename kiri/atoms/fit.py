"""Does a reading fit its atom? The one answer `kiri import`, `kiri check` and `kiri forget
--bad` share, so a row import lets in is a row training and scoring can read.

A reading fits its atom's spec when every field the atom reads is there: a finite number
no larger than VALUE_LIMIT either way (None also for an optional field; one of the labels
for a categorical one). A value outside a field's range fits: it goes to the edge bucket,
as designed. Fields the atom does not read are ignored, as training and scoring ignore
them, and an atom with a clock may leave its clock fields out: they come from the
reading's time.
"""

from ..ground import is_finite_number, one_line
from .atom import CLOCK

# No measurement KIRI reads comes near this (a petabyte in bytes is 1e15); a value beyond it
# is a unit mistake or garbage, and learned buckets cut at such a value would be meaningless.
VALUE_LIMIT = 1e15


def misfit(spec, values):
    """Why `values` (a reading's dict) does not fit the atom `spec`, in a few words, or None."""
    if not isinstance(values, dict):
        return f"values must be a dict of field -> number, got {type(values).__name__}"
    for field, kind in spec.schema.items():
        if field not in values:
            if optional(kind) or field in clock_fields(spec):
                continue
            return f"field {field} is missing"
        problem = _field_misfit(kind, values[field])
        if problem:
            return f"field {field} {problem}"
    return None


def clock_fields(spec):
    """The fields a reading of this atom may leave out because its time gives them."""
    return CLOCK if spec.clock else ()


def optional(kind):
    return isinstance(kind, tuple) and len(kind) > 3 and kind[3] == "optional"


def _field_misfit(kind, value):
    if isinstance(kind, dict) and "labels" in kind:
        return None if value in kind["labels"] else f"must be one of {', '.join(kind['labels'])}, got {value!r}"
    if value is None and optional(kind):
        return None
    if not is_finite_number(value):
        return f"must be a finite number, got {_short(value)}"
    if abs(value) > VALUE_LIMIT:
        return f"is {_short(value)}, beyond ±{VALUE_LIMIT:g}"
    return None


def _short(value):
    return one_line(repr(value), 40)   # a 400-digit number is named, not printed
