"""Languages turn documents into token ids and back.

microgpt's tokenizer: the vocabulary is the sorted set of characters seen in the data,
plus one BOS token (id = len(chars)) that marks both the start and the end of a
document. A language is saved inside the weights file, so a model is never fed a
vocabulary it was not trained on.
"""

import math

from ..errors import KiriError

BOS_TOKEN = "<BOS>"


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

    `schema` is ordered {prefix: (lo, hi, buckets)}: the range lo..hi is cut into equal
    buckets, and a value's token is its prefix followed by its bucket number. An
    observation is [BOS, one token per field in schema order]. Values outside lo..hi
    are clamped to the edge bucket and reported; a value that is not a number is an
    error naming the field.
    """

    kind = "state"

    def __init__(self, name, schema):
        self.name = name
        self.schema = {}
        for prefix, spec in schema.items():
            if not isinstance(prefix, str) or not prefix.isalpha():
                raise ValueError(f"{name}: field prefix must be letters, got {prefix!r}")
            try:
                lo, hi, buckets = float(spec[0]), float(spec[1]), spec[2]
            except (TypeError, ValueError, IndexError):
                raise ValueError(f"{name}: field {prefix} needs (lo, hi, buckets), got {spec!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{name}: field {prefix} needs lo < hi, got {spec!r}")
            if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
                raise ValueError(f"{name}: field {prefix} needs a positive whole number of buckets, got {buckets!r}")
            self.schema[prefix] = (lo, hi, buckets)
        if not self.schema:
            raise ValueError(f"{name}: a state language needs at least one field")
        self.fields = list(self.schema)
        self.tokens = [f"{prefix}{b}" for prefix, (_, _, n) in self.schema.items() for b in range(n)]
        self.bos = len(self.tokens)
        self.vocab_size = len(self.tokens) + 1
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.first = {}
        for prefix in self.fields:
            self.first[prefix] = self.index[prefix + "0"]

    def bucket(self, prefix, value):
        """(bucket, clamped) for a value of one field."""
        lo, hi, n = self.schema[prefix]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{self.name}: field {prefix} must be a finite number, got {value!r}")
        b = int((value - lo) / (hi - lo) * n)
        return min(max(b, 0), n - 1), not lo <= value <= hi

    def encode_report(self, obs):
        """([BOS, token per field], [fields whose value was clamped to the edge bucket])."""
        if not isinstance(obs, dict):
            raise ValueError(f"{self.name}: an observation is a dict of field values, got {type(obs).__name__}")
        ids, clamped = [self.bos], []
        for prefix in self.fields:
            if prefix not in obs:
                raise ValueError(f"{self.name}: field {prefix} is missing")
            b, was_clamped = self.bucket(prefix, obs[prefix])
            ids.append(self.first[prefix] + b)
            if was_clamped:
                clamped.append(prefix)
        return ids, clamped

    def encode(self, obs):
        return self.encode_report(obs)[0]

    def parse_tokens(self, text):
        """'C9 M9 D4 …' → [BOS, ids…]; every field once, in schema order."""
        words = text.split()
        if len(words) != len(self.fields):
            raise ValueError(f"{self.name}: expected {len(self.fields)} tokens ({' '.join(self.fields)}), got {text!r}")
        ids = [self.bos]
        for prefix, word in zip(self.fields, words):
            if not word.startswith(prefix) or word not in self.index:
                lo, hi, n = self.schema[prefix]
                raise ValueError(f"{self.name}: expected a token {prefix}0..{prefix}{n - 1} here, got {word!r}")
            ids.append(self.index[word])
        return ids

    def token_name(self, i):
        return BOS_TOKEN if i == self.bos else self.tokens[i]

    def decode(self, ids):
        """Readable tokens, BOS left out: 'C5 M5 D4 S1 L1 N1'."""
        return " ".join(self.tokens[i] for i in ids if i != self.bos)

    def field_of(self, i):
        return None if i == self.bos else self.tokens[i].rstrip("0123456789")

    def field_tokens(self, prefix):
        """Token ids of one field, in bucket order."""
        return range(self.first[prefix], self.first[prefix] + self.schema[prefix][2])

    def bucket_range(self, i):
        """(lo, hi) of the values a token stands for."""
        prefix = self.field_of(i)
        lo, hi, n = self.schema[prefix]
        b = i - self.first[prefix]
        width = (hi - lo) / n
        return lo + b * width, lo + (b + 1) * width

    def to_dict(self):
        return {"kind": self.kind, "name": self.name,
                "schema": [[prefix, lo, hi, n] for prefix, (lo, hi, n) in self.schema.items()]}


def language_from_dict(d):
    """Rebuild the language saved in a weights file."""
    if d.get("kind") == CharLanguage.kind:
        return CharLanguage(d["chars"])
    if d.get("kind") == StateLanguage.kind:
        return StateLanguage(d["name"], {prefix: (lo, hi, n) for prefix, lo, hi, n in d["schema"]})
    raise KiriError(f"unknown language kind {d.get('kind')!r} in weights file")
