"""MELD-ST as distributed -> an emopres pairs file and per-language SER manifests.

MELD-ST (Chen et al., Findings of ACL 2024) pairs English utterances of MELD (the TV series
"Friends") with their Japanese or German dubbing. Each language pair is one folder:

    ENG_JPN/jpn_train.csv  jpn_valid.csv  jpn_test.csv
    ENG_JPN/ENG/{train,dev,test}/{train,dev,test}_{id}.wav
    ENG_JPN/JPN/{train,dev,test}/{train,dev,test}_{id}.wav

(ENG_DEU the same with deu_*.csv and DEU/). CSV columns: id, dia_id, utt_id, emotion, sentiment,
English, Japanese|German, season, episode, speaker, English_begin_time, English_end_time,
<target>_begin_time, <target>_end_time. The `valid` CSV's audio lies in the `dev` folders, named
dev_{id}.wav (nkululeko's data/meld-st/preprocess_meld_st.py in felixbur/nkululeko builds the same
paths).

Files under 1 kB (``MIN_BYTES`` = 1024 bytes) are skipped, as the paper did; so are files that are
absent. Every skip is counted per split and language and listed by path. A SER manifest keeps
every usable utterance of its language; the pairs file keeps the rows whose two files are both
usable.

Outputs (paths relative to the pair folder, which is recorded as ``audio_root``):

- ``pairs.csv`` (every split) and ``pairs_{train,dev,test}.csv``: pair_id, source, target,
  label (the MELD emotion, shared by both sides), group (the dialogue: ``{split}:{dia_id}``,
  because MELD numbers dialogues per split), split, dia_id, utt_id, speaker;
- ``ser_eng.csv`` and ``ser_jpn.csv`` / ``ser_deu.csv``: path, emotion, split (train/dev/test,
  dev = the `valid` CSV), speaker, sentiment, dia_id, utt_id, id, language;
- ``dataset.json``: the counts, the skipped and missing files, the files written.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from emopres_client.pairs import PairSpec

SOURCE_LANGUAGE = "ENG"
SOURCE_TEXT_COLUMN = "English"
# pair folder -> (target language folder, CSV prefix, target text column)
PAIRS: dict[str, tuple[str, str, str]] = {"ENG_JPN": ("JPN", "jpn", "Japanese"), "ENG_DEU": ("DEU", "deu", "German")}
# (CSV split name, audio folder = file-name prefix = emopres split)
CSV_SPLITS: tuple[tuple[str, str], ...] = (("train", "train"), ("valid", "dev"), ("test", "test"))
SPLITS = tuple(folder for _, folder in CSV_SPLITS)
MIN_BYTES = 1024
REQUIRED_COLUMNS = ("id", "dia_id", "utt_id", "emotion")
OK, MISSING, SMALL = "ok", "missing", "small"

PAIR_COLUMNS = ("pair_id", "source", "target", "label", "group", "split", "dia_id", "utt_id", "speaker")
SER_COLUMNS = ("path", "emotion", "split", "speaker", "sentiment", "dia_id", "utt_id", "id", "language")


class MeldStError(ValueError):
    """A MELD-ST folder that cannot be read as distributed; the message is for the user."""


def distributed_columns(pair: str) -> tuple[str, ...]:
    target_text = PAIRS[pair][2]
    return (
        "id",
        "dia_id",
        "utt_id",
        "emotion",
        "sentiment",
        SOURCE_TEXT_COLUMN,
        target_text,
        "season",
        "episode",
        "speaker",
        f"{SOURCE_TEXT_COLUMN}_begin_time",
        f"{SOURCE_TEXT_COLUMN}_end_time",
        f"{target_text}_begin_time",
        f"{target_text}_end_time",
    )


@dataclass(frozen=True)
class Row:
    """One CSV row: an English utterance and its dubbed counterpart, with the state of both files."""

    split: str  # train / dev / test
    id: str
    dia_id: str
    utt_id: str
    emotion: str
    sentiment: str
    speaker: str
    source: str  # relative to the pair folder
    target: str
    source_status: str  # ok / missing / small
    target_status: str

    @property
    def pair_id(self) -> str:
        return f"{self.split}_{self.id}"

    @property
    def group(self) -> str:
        return f"{self.split}:{self.dia_id}"

    @property
    def usable(self) -> bool:
        return self.source_status == OK and self.target_status == OK


@dataclass
class MeldSt:
    """One language pair of MELD-ST, read: rows of every split and what was skipped."""

    pair: str
    pair_dir: Path
    min_bytes: int
    rows: list[Row]
    csv_files: dict[str, str] = field(default_factory=dict)  # split -> CSV file name
    missing_columns: list[str] = field(default_factory=list)  # distributed columns the CSVs lack (not needed)

    @property
    def target_language(self) -> str:
        return PAIRS[self.pair][0]

    @property
    def languages(self) -> tuple[str, str]:
        return SOURCE_LANGUAGE, self.target_language

    def status(self, row: Row, language: str) -> str:
        return row.source_status if language == SOURCE_LANGUAGE else row.target_status

    def path(self, row: Row, language: str) -> str:
        return row.source if language == SOURCE_LANGUAGE else row.target

    def pairs(self, split: str | None = None) -> list[Row]:
        return [r for r in self.rows if r.usable and (split is None or r.split == split)]

    def pair_specs(self, split: str | None = None) -> list[PairSpec]:
        return [PairSpec(r.pair_id, r.source, r.target, r.emotion, r.group) for r in self.pairs(split)]

    def utterances(self, language: str, split: str | None = None) -> list[Row]:
        return [r for r in self.rows if self.status(r, language) == OK and (split is None or r.split == split)]

    def counts(self) -> dict:
        """Exact counts per split: CSV rows, per language usable / under MIN_BYTES / missing files, usable pairs."""
        out: dict = {}
        for split in (*SPLITS, "total"):
            rows = self.rows if split == "total" else [r for r in self.rows if r.split == split]
            entry: dict = {"rows": len(rows)}
            for language in self.languages:
                statuses = [self.status(r, language) for r in rows]
                entry[language] = {
                    "ok": statuses.count(OK),
                    "small": statuses.count(SMALL),
                    "missing": statuses.count(MISSING),
                }
            entry["pairs"] = sum(r.usable for r in rows)
            out[split] = entry
        return out

    def skipped(self, status: str) -> dict[str, list[str]]:
        """Relative paths with this status (SMALL or MISSING), per language, in CSV order."""
        return {
            language: [self.path(r, language) for r in self.rows if self.status(r, language) == status]
            for language in self.languages
        }

    def summary(self) -> dict:
        return {
            "pair": self.pair,
            "audio_root": str(self.pair_dir),
            "min_bytes": self.min_bytes,
            "csv_files": self.csv_files,
            "missing_columns": self.missing_columns,
            "counts": self.counts(),
            "skipped_small": self.skipped(SMALL),
            "missing": self.skipped(MISSING),
        }


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def check_pair(pair: str) -> str:
    name = pair.strip().upper().replace("-", "_")
    if name not in PAIRS:
        raise MeldStError(f"unknown MELD-ST language pair {pair!r} (choose {' or '.join(PAIRS)})")
    return name


def find_pair_dir(root, pair: str) -> Path:
    """`root` may be the MELD-ST folder (holding ENG_JPN/, ENG_DEU/) or the pair folder itself."""
    root = Path(root)
    if not root.is_dir():
        raise MeldStError(f"MELD-ST folder {root} does not exist")
    prefix = PAIRS[pair][1]
    for candidate in (root / pair, root):
        if candidate.is_dir() and ((candidate / f"{prefix}_train.csv").is_file() or candidate.name == pair):
            return candidate
    raise MeldStError(
        f"{root} holds neither {pair}/ nor {prefix}_train.csv (expected the MELD-ST folder "
        f"with {pair}/{prefix}_{{train,valid,test}}.csv)"
    )


def _file_status(path: Path, min_bytes: int) -> str:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return MISSING
    return OK if size >= min_bytes else SMALL


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return [c.strip() for c in (reader.fieldnames or [])], rows
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise MeldStError(f"cannot read {path}: {error}") from None


def read_meld_st(root, pair: str, *, min_bytes: int = MIN_BYTES) -> MeldSt:
    """Read one language pair: the three CSVs, and the size of every audio file they name."""
    pair = check_pair(pair)
    pair_dir = find_pair_dir(root, pair)
    target_language, prefix, _ = PAIRS[pair]
    rows: list[Row] = []
    csv_files: dict[str, str] = {}
    missing_columns: set[str] = set()
    for csv_split, folder in CSV_SPLITS:
        path = pair_dir / f"{prefix}_{csv_split}.csv"
        if not path.is_file():
            raise MeldStError(
                f"{path} not found (a MELD-ST pair folder has {prefix}_train.csv, "
                f"{prefix}_valid.csv and {prefix}_test.csv)"
            )
        csv_files[folder] = path.name
        columns, records = _read_csv(path)
        lacking = [c for c in REQUIRED_COLUMNS if c not in columns]
        if lacking:
            raise MeldStError(f"{path} has no {', '.join(lacking)} column(s) (columns: {', '.join(columns)})")
        missing_columns.update(c for c in distributed_columns(pair) if c not in columns)
        seen: set[str] = set()
        for line, record in enumerate(records, start=2):
            record = {(k or "").strip(): (v or "").strip() for k, v in record.items() if k is not None}
            utterance_id = record["id"]
            if not utterance_id:
                raise MeldStError(f"{path}:{line}: empty id")
            if utterance_id in seen:
                raise MeldStError(f"{path}:{line}: duplicate id {utterance_id!r}")
            seen.add(utterance_id)
            emotion = record["emotion"].lower()
            if not emotion:
                raise MeldStError(f"{path}:{line}: empty emotion")
            name = f"{folder}/{folder}_{utterance_id}.wav"
            source, target = f"{SOURCE_LANGUAGE}/{name}", f"{target_language}/{name}"
            rows.append(
                Row(
                    folder,
                    utterance_id,
                    record["dia_id"],
                    record["utt_id"],
                    emotion,
                    record.get("sentiment", "").lower(),
                    record.get("speaker", ""),
                    source,
                    target,
                    _file_status(pair_dir / source, min_bytes),
                    _file_status(pair_dir / target, min_bytes),
                )
            )
    corpus = MeldSt(pair, pair_dir, min_bytes, rows, csv_files, sorted(missing_columns))
    for language in corpus.languages:
        if rows and all(corpus.status(r, language) == MISSING for r in rows):
            raise MeldStError(
                f"no {language} audio found under {pair_dir / language} (expected e.g. "
                f"{pair_dir / corpus.path(rows[0], language)})"
            )
    return corpus


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _pair_record(row: Row) -> dict:
    return {
        "pair_id": row.pair_id,
        "source": row.source,
        "target": row.target,
        "label": row.emotion,
        "group": row.group,
        "split": row.split,
        "dia_id": row.dia_id,
        "utt_id": row.utt_id,
        "speaker": row.speaker,
    }


def manifest_name(language: str) -> str:
    return f"ser_{language.lower()}.csv"


def write_dataset(corpus: MeldSt, out_dir) -> dict:
    """Write the pairs files, the SER manifests and dataset.json; return dataset.json's content."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"pairs": _write_csv(out / "pairs.csv", PAIR_COLUMNS, [_pair_record(r) for r in corpus.pairs()]).name}
    for split in SPLITS:
        files[f"pairs_{split}"] = _write_csv(
            out / f"pairs_{split}.csv", PAIR_COLUMNS, [_pair_record(r) for r in corpus.pairs(split)]
        ).name
    for language in corpus.languages:
        records = [
            {
                "path": corpus.path(r, language),
                "emotion": r.emotion,
                "split": r.split,
                "speaker": r.speaker,
                "sentiment": r.sentiment,
                "dia_id": r.dia_id,
                "utt_id": r.utt_id,
                "id": r.id,
                "language": language,
            }
            for r in corpus.utterances(language)
        ]
        files[f"ser_{language.lower()}"] = _write_csv(out / manifest_name(language), SER_COLUMNS, records).name
    summary = {**corpus.summary(), "files": files}
    (out / "dataset.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    return summary


def format_counts(corpus: MeldSt) -> str:
    """A table of the exact counts: per split, CSV rows; per language usable / skipped / missing files; pairs."""
    counts = corpus.counts()
    kb = f"<{corpus.min_bytes}B"
    header = ["split", "csv", "rows"]
    for language in corpus.languages:
        header += [f"{language} ok", f"{language} {kb}", f"{language} missing"]
    header.append("pairs")
    lines = []
    for split in (*SPLITS, "total"):
        entry = counts[split]
        cells = [split, corpus.csv_files.get(split, ""), str(entry["rows"])]
        for language in corpus.languages:
            cells += [str(entry[language][k]) for k in ("ok", "small", "missing")]
        cells.append(str(entry["pairs"]))
        lines.append(cells)
    widths = [max(len(header[i]), *(len(c[i]) for c in lines)) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    total = counts["total"]
    skipped = sum(total[lang]["small"] for lang in corpus.languages)
    missing = sum(total[lang]["missing"] for lang in corpus.languages)
    title = (
        f"MELD-ST {corpus.pair} ({corpus.pair_dir}): {skipped} file(s) under {corpus.min_bytes} bytes skipped "
        f"(as the paper did), {missing} file(s) missing"
    )
    return "\n".join([title, render(header), *(render(c) for c in lines)])
