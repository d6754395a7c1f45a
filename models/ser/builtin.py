"""SER from zero on the paper profile: emotion2vec+'s own classifier, read as a SER head.

emotion2vec+ checkpoints carry a 9-way classifier over the utterance mean of their last-layer frames (``proj``,
labels in tokens.txt: angry, disgusted, fearful, happy, neutral, other, sad, surprised, <unk>). Without a trained
head, the paper profile reads SER with it: the 7 classes that map onto MELD-ST's (E2V_TO_MELD), ``other`` and
``<unk>`` dropped and the 7 renormalised. Dropping classes and renormalising a softmax is the softmax of the kept
logits, so the classifier is a SerHead without hidden layers whose one linear layer holds those 7 rows of
``proj``: its probabilities equal funasr's ``AutoModel.generate`` scores mapped the same way
(tests/models/test_builtin_head.py). A trained head (``--head``, ``<model dir>/ser_head``) always wins.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.paper.emotion2vec import read_config, read_labels, resolve_files
from models.paper.emotion2vec_net import _map_checkpoint_keys
from models.runtime.batching import load_torch_file
from models.ser.head import HeadError, SerHead

# emotion2vec+ label (tokens.txt, after its "中文/" prefix) -> MELD-ST class, in the head's class order
E2V_TO_MELD = {
    "angry": "anger",
    "disgusted": "disgust",
    "fearful": "fear",
    "happy": "joy",
    "neutral": "neutral",
    "sad": "sadness",
    "surprised": "surprise",
}
BUILTIN = "emotion2vec_proj"  # head.json / head metadata "builtin": what read SER
FEATURE_SET = "emotion2vec_plus_large"


def _english(label: str) -> str:
    return label.rsplit("/", 1)[-1].strip().lower()


def emotion2vec_head(folder: str | Path) -> SerHead:
    """The built-in classifier of the emotion2vec+ folder ``folder`` as a SerHead over MELD-ST's 7 classes."""
    folder = Path(folder)
    files = resolve_files(folder)
    if not files["model"].is_file() or not files["config"].is_file():
        raise HeadError(f"no emotion2vec model at {folder} (needs {files['config'].name} and {files['model'].name})")
    labels = read_labels(files["tokens"])
    if not labels:
        raise HeadError(f"{files['tokens']} is missing or empty: the built-in classifier's labels are unknown")
    names = [_english(label) for label in labels]
    absent = [label for label in E2V_TO_MELD if label not in names]
    if absent:
        raise HeadError(f"{files['tokens']} lacks the labels {', '.join(absent)} (has {', '.join(names)})")
    checkpoint = load_torch_file(files["model"], mmap=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    state = _map_checkpoint_keys(checkpoint, read_config(files["config"]).scope_map)
    if "proj.weight" not in state or "proj.bias" not in state:
        raise HeadError(
            f"{files['model']} has no built-in classifier (proj): train a SER head on emotion2vec "
            "features (`emopres train-ser --features emotion2vec`) and pass it with --head"
        )
    weight, bias = state["proj.weight"].float(), state["proj.bias"].float()
    if weight.shape[0] != len(labels):
        raise HeadError(
            f"{files['model']}: proj has {weight.shape[0]} outputs but {files['tokens'].name} {len(labels)} labels"
        )
    rows = [names.index(label) for label in E2V_TO_MELD]
    head = SerHead.new(
        int(weight.shape[1]),
        list(E2V_TO_MELD.values()),
        FEATURE_SET,
        hidden=(),
        dropout=0.0,
        metadata={
            "source": "emotion2vec+ built-in classifier (proj): its 9 classes mapped to "
            "MELD-ST's 7, other and <unk> dropped",
            "builtin": BUILTIN,
            "model": str(folder),
        },
    )
    with torch.no_grad():
        head.network[0].weight.copy_(weight[rows])
        head.network[0].bias.copy_(bias[rows])
    head.network.eval()
    return head
