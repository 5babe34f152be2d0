"""Languages turn documents into token ids and back.

microgpt's tokenizer: the vocabulary is the sorted set of characters seen in the data,
plus one BOS token (id = len(chars)) that marks both the start and the end of a
document. A language is saved inside the weights file, so a model is never fed a
vocabulary it was not trained on.
"""

import bisect
import math

from ..ground import is_finite_number

BOS_TOKEN = "<BOS>"
# More buckets than this in one field would teach a tiny model nothing; the bound also keeps a
# language read from a hand-edited weights file from building millions of tokens.
MAX_BUCKETS = 1000
MAX_BEYOND = 16   # the 16th band begins 2**14 learned ranges beyond the edge


class CharLanguage:
    kind = "char"

    def __init__(self, chars):
        chars = sorted(set(chars))
        if not chars:
            raise ValueError("a character language needs at least one character")
        self.chars = chars
        self.index = {ch: i for i, ch in enumerate(chars)}
        self.bos = len(chars)
        self.vocab_size = len(chars) + 1

    @classmethod
    def from_docs(cls, docs):
        return cls(set("".join(docs)))

    def encode(self, doc):
        """[BOS, c1, c2, ..., BOS]; an unknown character is an error naming it."""
        ids = [self.bos]
        for ch in doc:
            if ch not in self.index:
                raise ValueError(f"character {ch!r} is not in the language's vocabulary")
            ids.append(self.index[ch])
        ids.append(self.bos)
        return ids

    def decode(self, ids):
        """Characters of `ids`, BOS left out."""
        return "".join(self.chars[i] for i in ids if i != self.bos)

    def token_name(self, i):
        return BOS_TOKEN if i == self.bos else self.chars[i]

    def to_dict(self):
        return {"kind": self.kind, "chars": "".join(self.chars)}


class StateLanguage:
    """Quantized state: each field of an observation becomes one token such as `C5`.

    `schema` is ordered {prefix: spec}. A numeric field's spec is (lo, hi, buckets): the
    range lo..hi is cut into equal buckets and a value's token is the prefix followed by
    its bucket number; values outside lo..hi are clamped to the edge bucket and
    reported. (lo, hi, buckets, "optional") adds a token `<prefix>_` for a value that is
    absent (None, or missing from the observation) — e.g. an atom that cannot be read here, which must not look like a
    score of 0. A categorical field's spec is {"labels": [...]}: the labels are the
    tokens (Nerve's actions). A learned field's spec is {"edges": [e0, …, en]}, cut
    points learned from data (see `quantile_edges`): n buckets between them plus explicit
    `<prefix><` / `<prefix>>` tokens for values below or above everything seen;
    {"edges": […], "beyond": k} grades how far beyond, in k bands on each side (`V>`,
    `V>2` … `V>k`; see `beyond_band`). An observation is [BOS, one token per field in
    order]; a value that does not fit its field is an error naming the field.
    """

    kind = "state"

    def __init__(self, name, schema):
        self.name = name
        self.schema, self.optional, self.labels, self.edges, self.beyond = {}, set(), {}, {}, {}
        self.tokens, self.token_field, self.first = [], [], {}
        for prefix, spec in schema.items():
            if not isinstance(prefix, str) or not prefix.isalpha():
                raise ValueError(f"{name}: field prefix must be letters, got {prefix!r}")
            self.first[prefix] = len(self.tokens)
            if isinstance(spec, dict) and "edges" in spec:
                edges = spec["edges"]
                if not isinstance(edges, list) or not 2 <= len(edges) <= MAX_BUCKETS + 1 \
                        or not all(is_finite_number(e) for e in edges) or edges != sorted(set(edges)):
                    raise ValueError(f"{name}: field {prefix} needs 2 to {MAX_BUCKETS + 1} increasing finite edges, "
                                     f"got {spec!r}")
                beyond = spec.get("beyond", 1)
                if isinstance(beyond, bool) or not isinstance(beyond, int) or not 1 <= beyond <= MAX_BEYOND:
                    raise ValueError(f"{name}: field {prefix} needs 1 to {MAX_BEYOND} bands beyond its edges, got {beyond!r}")
                self.edges[prefix] = edges = [float(e) for e in edges]
                self.beyond[prefix] = beyond
                self.tokens += [_beyond_token(prefix, "<", band) for band in range(beyond, 0, -1)] + \
                    [f"{prefix}{b}" for b in range(len(edges) - 1)] + \
                    [_beyond_token(prefix, ">", band) for band in range(1, beyond + 1)]
            elif isinstance(spec, dict):
                labels = spec.get("labels")
                if not isinstance(labels, (list, tuple)) or not labels or \
                        not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
                    raise ValueError(f"{name}: field {prefix} needs distinct, non-empty text labels, got {spec!r}")
                self.labels[prefix] = labels = list(labels)
                self.tokens += labels
            else:
                lo, hi, buckets, optional = self._numeric(name, prefix, spec)
                self.schema[prefix] = (lo, hi, buckets)
                self.tokens += [f"{prefix}{b}" for b in range(buckets)]
                if optional:
                    self.optional.add(prefix)
                    self.tokens.append(f"{prefix}_")
            self.token_field += [prefix] * (len(self.tokens) - len(self.token_field))
        if not self.tokens:
            raise ValueError(f"{name}: a state language needs at least one field")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"{name}: two fields share a token name")
        self.fields = list(self.first)
        self.bos = len(self.tokens)
        self.vocab_size = len(self.tokens) + 1
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @staticmethod
    def _numeric(name, prefix, spec):
        if not isinstance(spec, (tuple, list)) or len(spec) not in (3, 4) or (len(spec) == 4 and spec[3] != "optional"):
            raise ValueError(f"{name}: field {prefix} needs (lo, hi, buckets) or (lo, hi, buckets, \"optional\"), "
                             f"got {spec!r}")
        lo, hi, buckets = spec[:3]
        # hi - lo finite too: every bucket's range (bucket_range) must be a pair of numbers.
        if not (is_finite_number(lo) and is_finite_number(hi) and lo < hi and math.isfinite(float(hi) - float(lo))):
            raise ValueError(f"{name}: field {prefix} needs finite numbers lo < hi, less than 1.8e308 apart, got {spec!r}")
        if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= MAX_BUCKETS:
            raise ValueError(f"{name}: field {prefix} needs a whole number of buckets from 1 to {MAX_BUCKETS}, "
                             f"got {buckets!r}")
        return float(lo), float(hi), buckets, len(spec) == 4

    def token_for(self, prefix, value):
        """(token id, clamped) for a value of one field."""
        if prefix in self.labels:
            if value not in self.labels[prefix]:
                raise ValueError(f"{self.name}: field {prefix} must be one of {', '.join(self.labels[prefix])}, got {value!r}")
            return self.index[value], False
        if value is None and prefix in self.optional:
            return self.index[prefix + "_"], False
        if prefix in self.edges:
            return self._learned_bucket(prefix, value), False
        lo, hi, n = self.schema[prefix]
        if not is_finite_number(value):
            raise ValueError(f"{self.name}: field {prefix} must be a finite number, got {value!r}")
        # The edges first: far outside a narrow range, (value - lo) / (hi - lo) overflows to inf.
        b = 0 if value <= lo else n - 1 if value >= hi else min(int((value - lo) / (hi - lo) * n), n - 1)
        return self.first[prefix] + b, not lo <= value <= hi

    def _learned_bucket(self, prefix, value):
        """Bucket between learned edges; explicit below-range / above-range tokens outside them."""
        if not is_finite_number(value):
            raise ValueError(f"{self.name}: field {prefix} must be a finite number, got {value!r}")
        edges, bands = self.edges[prefix], self.beyond[prefix]
        span = edges[-1] - edges[0]
        if value < edges[0]:
            return self.index[_beyond_token(prefix, "<", beyond_band((edges[0] - value) / span, bands))]
        if value > edges[-1]:
            return self.index[_beyond_token(prefix, ">", beyond_band((value - edges[-1]) / span, bands))]
        return self.index[f"{prefix}{min(bisect.bisect_right(edges, value) - 1, len(edges) - 2)}"]

    def encode_report(self, obs):
        """([BOS, token per field], [fields whose value was clamped to the edge bucket])."""
        if not isinstance(obs, dict):
            raise ValueError(f"{self.name}: an observation is a dict of field values, got {type(obs).__name__}")
        ids, clamped = [self.bos], []
        for prefix in self.fields:
            if prefix not in obs and prefix not in self.optional:
                raise ValueError(f"{self.name}: field {prefix} is missing")
            # A missing optional field is absent (`<prefix>_`): e.g. a Nerve state stored
            # before that atom was declared.
            token, was_clamped = self.token_for(prefix, obs.get(prefix))
            ids.append(token)
            if was_clamped:
                clamped.append(prefix)
        return ids, clamped

    def encode(self, obs):
        return self.encode_report(obs)[0]

    def parse_tokens(self, text, fields=None):
        """'C9 M9 D4 …' → [BOS, ids…]; every field (or the first `fields`) once, in schema order."""
        fields = self.fields if fields is None else self.fields[:fields]
        words = text.split()
        if len(words) != len(fields):
            raise ValueError(f"{self.name}: expected {len(fields)} tokens ({' '.join(fields)}), got {text!r}")
        ids = [self.bos]
        for prefix, word in zip(fields, words):
            if word not in self.index or self.token_field[self.index[word]] != prefix:
                choices = [self.tokens[i] for i in self.field_tokens(prefix)]
                raise ValueError(f"{self.name}: expected a token {choices[0]}..{choices[-1]} here, got {word!r}")
            ids.append(self.index[word])
        return ids

    def token_name(self, i):
        return BOS_TOKEN if i == self.bos else self.tokens[i]

    def decode(self, ids):
        """Readable tokens, BOS left out: 'C5 M5 D4 S1 L1 N1'."""
        return " ".join(self.tokens[i] for i in ids if i != self.bos)

    def field_of(self, i):
        return None if i == self.bos else self.token_field[i]

    def field_tokens(self, prefix):
        """Token ids of one field, in order."""
        start = self.first[prefix]
        return range(start, start + self.token_field.count(prefix))

    def bucket_range(self, i):
        """(lo, hi) of the values a bucket token stands for; None for a token that names no
        range (a label, an absent value, below / above the learned edges, BOS)."""
        prefix = self.field_of(i)
        b = i - self.first.get(prefix, 0)
        if prefix in self.edges:
            edges, b = self.edges[prefix], b - self.beyond[prefix]
            return (edges[b], edges[b + 1]) if 0 <= b < len(edges) - 1 else None
        if prefix not in self.schema or b >= self.schema[prefix][2]:
            return None
        lo, hi, n = self.schema[prefix]
        width = (hi - lo) / n
        return lo + b * width, lo + (b + 1) * width

    def to_dict(self):
        schema = []
        for prefix in self.fields:
            if prefix in self.labels:
                schema.append([prefix, {"labels": self.labels[prefix]}])
            elif prefix in self.edges:
                bands = self.beyond[prefix]
                schema.append([prefix, {"edges": self.edges[prefix], **({"beyond": bands} if bands > 1 else {})}])
            else:
                lo, hi, n = self.schema[prefix]
                schema.append([prefix, lo, hi, n] + (["optional"] if prefix in self.optional else []))
        return {"kind": self.kind, "name": self.name, "schema": schema}


EDGE_MARGIN = 0.1   # learned outer buckets reach 10 % of the seen range beyond it


def beyond_band(distance, bands):
    """Which of `bands` bands a value `distance` learned ranges beyond the edges falls in:
    1 up to one range beyond, then each band twice as far as the one before — (1, 2],
    (2, 4], … — the last one everything further. A level that leaves the learned range
    for good is then still read: a move from just above it to three times as far is a
    new token, not the same `V>` (with one band, a database whose CPU had settled just
    above its first days' range showed nothing when it doubled)."""
    band, reach = 1, 1.0
    while band < bands and distance > reach:
        band, reach = band + 1, reach * 2
    return band


def _beyond_token(prefix, side, band):
    return f"{prefix}{side}" if band == 1 else f"{prefix}{side}{band}"


def quantile_edges(values, buckets, margin=EDGE_MARGIN):
    """Cut points that put about the same number of `values` in each of `buckets` buckets.

    A value repeated many times (a metric that is mostly 0, a CPU at its floor) would be
    several quantiles at once, and their cut points one; instead it gets a bucket to itself,
    and the buckets it would have taken go to the other values: the fullest bucket that
    holds more than one distinct value is split where it halves most evenly (halfway
    between two neighbouring values), until there are `buckets` or none can be split.
    (With quantiles alone, a disk that wrote in one row of fifteen had one bucket for all
    its values: its largest burst was the same token as a quiet row.)
    `margin` widens the outer buckets by that fraction of the seen range on each side:
    the smallest and largest values of a sample are not the edge of what is normal, so
    the below / above-range tokens are kept for values clearly beyond it.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile_edges: no values")
    n = len(ordered)
    edges = sorted(set(ordered[min(n - 1, round(k * (n - 1) / buckets))] for k in range(buckets + 1)))
    while len(edges) - 1 < buckets:
        cut = _even_cut(ordered, edges)
        if cut is None:
            break
        bisect.insort(edges, cut)
    if len(edges) < 2:
        edges = [edges[0] - 0.5, edges[0] + 0.5]  # a flat line: one bucket around it
    if margin > 0:
        span = edges[-1] - edges[0]
        edges[0] -= margin * span
        edges[-1] += margin * span
    return edges


def _even_cut(ordered, edges):
    """A cut halfway between two neighbouring values that splits the fullest splittable bucket
    most evenly (None: every bucket holds one distinct value). Bucket b holds the values in
    [edges[b], edges[b + 1]), the last one its top edge too."""
    best = None   # (values in the bucket, -imbalance, cut)
    for b in range(len(edges) - 1):
        i = bisect.bisect_left(ordered, edges[b])
        j = bisect.bisect_left(ordered, edges[b + 1]) if b < len(edges) - 2 else len(ordered)
        middle = ordered[(i + j) // 2]
        for at in (bisect.bisect_left(ordered, middle), bisect.bisect_right(ordered, middle)):
            if i < at < j:    # ordered[at - 1] < ordered[at], both in the bucket
                cut = (ordered[at - 1] + ordered[at]) / 2
                candidate = (j - i, -abs(2 * at - i - j), cut)
                if edges[b] < cut < edges[b + 1] and (best is None or candidate[:2] > best[:2]):
                    best = candidate
    return best[2] if best else None


def language_from_dict(d):
    """Rebuild the language saved in a weights file (to_dict's form); anything else, whatever
    its shape, is a ValueError saying what is wrong."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == CharLanguage.kind:
        if not isinstance(d.get("chars"), str) or not d["chars"]:
            raise ValueError(f"a character language needs its characters as text, got {d.get('chars')!r}")
        return CharLanguage(d["chars"])
    if kind == StateLanguage.kind:
        name, schema = d.get("name"), d.get("schema")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a state language needs a name, got {name!r}")
        if not isinstance(schema, list) or \
                not all(isinstance(entry, list) and len(entry) >= 2 and isinstance(entry[0], str) for entry in schema):
            raise ValueError(f"{name}: the schema must be a list of [field, spec …] entries")
        if len({entry[0] for entry in schema}) != len(schema):
            raise ValueError(f"{name}: the schema names a field twice")
        return StateLanguage(name, {entry[0]: entry[1] if len(entry) == 2 else tuple(entry[1:]) for entry in schema})
    raise ValueError(f"unknown language kind {kind!r}" if isinstance(d, dict) else
                     f"a language is a JSON object, got {type(d).__name__}")
