"""Languages turn documents into token ids and back.

microgpt's tokenizer: the vocabulary is the sorted set of characters seen in the data,
plus one BOS token (id = len(chars)) that marks both the start and the end of a
document. A language is saved inside the weights file, so a model is never fed a
vocabulary it was not trained on.
"""

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


def language_from_dict(d):
    """Rebuild the language saved in a weights file."""
    if d.get("kind") == CharLanguage.kind:
        return CharLanguage(d["chars"])
    raise KiriError(f"unknown language kind {d.get('kind')!r} in weights file")
