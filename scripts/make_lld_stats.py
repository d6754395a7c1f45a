"""Reference mean/std of the 25 eGeMAPS LLDs over all frames of 240 random files of both shipped corpora."""
import csv, json, random, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.lite.egemaps import Egemaps
from core.audio import load_audio_file
root = Path(__file__).resolve().parents[2] / "shared" / "data"
rows = []
for corpus in ("ravdess", "jvnv"):
    for r in csv.DictReader(open(f"{root}/{corpus}/manifest.csv")):
        rows.append(f"{root}/{corpus}/{r['path']}")
random.Random(0).shuffle(rows)
e = Egemaps(); frames = []
for p in rows[:240]:
    w, _ = load_audio_file(p); frames.append(e.low_level(w))
x = np.concatenate(frames)
json.dump({"names": e.low_level_names, "mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), 1e-6).tolist(),
           "provenance": "240 random files of RAVDESS + JVNV (shared/data), seed 0, all frames; eGeMAPSv02 LLD"},
          open(Path(__file__).resolve().parents[1] / "models/artifacts/egemaps_lld_stats.json", "w"), indent=1)
print(x.shape)
