"""The names demo: microgpt reproduced — learn baby names, then dream up new ones."""

import random
from pathlib import Path

from .core.engines import DEFAULT_ENGINE, make_engine
from .core.language import CharLanguage, language_from_dict
from .core.model import GPTConfig, init_params, param_count
from .core.sample import DEFAULT_TEMPERATURE, sample
from .core.train import train
from .core.weights import Weights, load, save
from .errors import KiriError
from .paths import shipped

WEIGHTS_NAME = "names.json"
# microgpt's model: 16-wide, 1 layer, 4 heads, 16 positions (4,192 parameters).
N_EMBD, N_LAYER, N_HEAD, BLOCK_SIZE = 16, 1, 4, 16


def shipped_names():
    """The names list that ships with KIRI (data/names.txt in a clone)."""
    return shipped("data", "names.txt")


def trained_weights(home):
    """Where `names train` saves: KIRI_HOME/weights, never next to the package, whose
    install prefix belongs to pip (and may not be writable)."""
    return Path(home) / "weights" / WEIGHTS_NAME


def weights_to_sample(home):
    """The user's own trained names weights if there are any, else the shipped ones."""
    trained = trained_weights(home)
    return trained if trained.exists() else shipped("weights", WEIGHTS_NAME)


def read_docs(path):
    """One name per line, blank lines dropped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise KiriError(f"cannot read names file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise KiriError(f"names file {path} is not UTF-8 text (byte {e.start} cannot be read)") from None
    docs = [line.strip() for line in text.splitlines() if line.strip()]
    if not docs:
        raise KiriError(f"names file {path} holds no names")
    return docs


def train_names(out, steps=1000, seed=42, data=None, engine=DEFAULT_ENGINE,
                batch=1, progress=None, metrics=None, report=print):
    """Train microgpt on the names (`data`, default the shipped list) and save the weights
    to `out`; returns the TrainResult."""
    data = data or shipped_names()
    docs = read_docs(data)
    language = CharLanguage.from_docs(docs)
    config = GPTConfig(vocab_size=language.vocab_size, n_embd=N_EMBD, n_layer=N_LAYER,
                       n_head=N_HEAD, block_size=BLOCK_SIZE)
    rng = random.Random(seed)
    model = make_engine(engine, config, init_params(config, rng))
    report(f"names: {len(docs)} docs, vocab {language.vocab_size}, {param_count(config)} parameters, engine {engine}")
    sequences = [language.encode(doc) for doc in docs]
    result = train(model, sequences, steps, rng, batch=batch, progress=progress, metrics=metrics)
    save(out, Weights(config, language.to_dict(), model.params(), step=steps,
                      trained_on={"data": Path(data).name, "docs": len(docs), "seed": seed, "engine": engine}))
    report(f"trained {steps} steps in {result.seconds:.1f}s; mean loss of the last 100 steps "
           f"{result.mean_loss(100):.4f}; saved {out}")
    return result


def sample_names(weights, n=20, temperature=DEFAULT_TEMPERATURE, seed=None, engine=DEFAULT_ENGINE):
    """`n` new names from saved weights."""
    w = load(weights)
    if w.language.get("kind") != "char":   # an atom's weights would sample its tokens, not names
        raise KiriError(f"{weights}: not names weights (their language is {w.language.get('kind')!r}, "
                        "not characters); train some with `kiri names train`")
    model = make_engine(engine, w.config, w.params)
    return sample(model, language_from_dict(w.language), random.Random(seed), n=n, temperature=temperature)
