"""The report page's "Signature and models" section: each model described for a reader (what it does in the
evaluation, where its weights came from), with the hashes that pin it. The JSON report's `source` fields keep the
provenance as recorded (a training command, a folder); the page never shows a shell command."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["describe_model", "models_section"]


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


SER_READINGS = {
    "ser_head": "Speech emotion recognition (SER) head of the absolute reading: reads each utterance on its own",
    "ser_head_side": (
        "Speech emotion recognition (SER) head of the side-normalised reading: each side of the job (or each "
        "speaker, when the pairs carry groups) is standardised on its own statistics before it is read"
    ),
}
# what each model of the profiles does here, and where its weights come from
MODELS = {
    "egemaps": (
        "Acoustic features: the eGeMAPS v02 set (88 utterance statistics, 25 frame descriptors such as pitch, "
        "loudness and spectral slope), read by the lite SER heads and the acoustic similarity",
        "no trained weights: a fixed feature set, computed by openSMILE (the opensmile package)",
    ),
    "egemaps_lld_stats": (
        "The mean and spread of each eGeMAPS frame descriptor, which put frames on one scale before the acoustic "
        "similarity compares them",
        "computed by emopres over 240 RAVDESS and JVNV recordings; shipped with emopres",
    ),
    "emotion2vec_plus_large": (
        "emotion2vec+ large: a self-supervised speech emotion model; its embeddings give emo-sim and the paper "
        "profile's SER features",
        "the public emotion2vec+ large checkpoint (emotion2vec on Hugging Face / iic on ModelScope)",
    ),
    "valence_arousal": (
        "wav2vec2-large-robust fine-tuned on MSP-Podcast for arousal, dominance and valence: gives va-sim",
        "audEERING's public checkpoint (audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim; CC BY-NC-SA 4.0)",
    ),
    "speaker_wavlm_ecapa": (
        "WavLM-Large with an ECAPA-TDNN head, a speaker embedding: gives Vsim (is it the same voice?)",
        "Microsoft UniSpeech's fine-tuned speaker-verification checkpoint (the one Seamless' VSim uses)",
    ),
    "xlsr_53": (
        "wav2vec2 XLSR-53: the multilingual speech encoder whose layers AutoPCP compares",
        "Meta's public checkpoint (facebook/wav2vec2-large-xlsr-53)",
    ),
    "autopcp_comparator": (
        "AutoPCP multilingual v2: predicts how alike two utterances' prosody sounds to people (1 to 5)",
        "Meta's public AutoPCP release (Seamless expressivity evaluation)",
    ),
}
CORPUS_NAMES = {"ravdess": "RAVDESS", "jvnv": "JVNV", "emodb": "EmoDB", "ased": "ASED"}


def _looks_like_command(text: str) -> bool:
    return text.startswith(("bench/", "python", "./", "emopres ")) or " --" in text


def _head_origin(info: dict) -> str:
    corpora = [CORPUS_NAMES.get(str(c), str(c)) for c in info.get("trained_on") or []]
    source = str(info.get("source") or "")
    if corpora:
        members = info.get("members")
        return (
            f"trained by emopres{' (' + str(info['trained']) + ')' if info.get('trained') else ''} on the training "
            f"speakers of {', '.join(corpora[:-1]) + ' and ' + corpora[-1] if len(corpora) > 1 else corpora[0]}"
            + (f", {members} networks averaged" if isinstance(members, int) and members > 1 else "")
            + " (research use: the corpora's licences)"
        )
    if source and not _looks_like_command(source):
        return source
    return "trained by emopres' SER recipe (its model card says on what)"


def describe_model(name: str, info: dict) -> tuple[str, str]:
    """(what the model does in this evaluation, where its weights came from), in words for a reader."""
    if name in SER_READINGS:
        classes = info.get("classes") or []
        what = f"{SER_READINGS[name]}; {info.get('feature_set') or 'its'} features to {len(classes)} emotions" + (
            f" ({', '.join(map(str, classes))})" if classes else ""
        )
        per = info.get("normalised_per")
        if isinstance(per, dict) and per:
            what += "; standardised over " + ", ".join(
                f"{side}: {'each speaker' if unit == 'group' else 'the whole side'}" for side, unit in per.items()
            )
        return what, _head_origin(info)
    if name in MODELS:
        return MODELS[name]
    source = str(info.get("source") or "")
    return name, ("" if _looks_like_command(source) else source)


def models_section(report: dict) -> str:
    rows = []
    for name, info in (report.get("models") or {}).items():
        info = info if isinstance(info, dict) else {}
        what, origin = describe_model(name, info)
        sha = info.get("sha256")
        sha_cell = f'<td><code title="{_esc(sha)}">{_esc(str(sha)[:16])}</code></td>' if sha else "<td>&ndash;</td>"
        rows.append(
            f'<tr><th scope="row"><code>{_esc(name)}</code></th><td>{_esc(what)}</td><td>{_esc(origin)}</td>'
            f"{sha_cell}<td>{_esc(info.get('version'))}</td></tr>"
        )
    bootstrap = (report.get("corpus") or {}).get("bootstrap") or {}
    boot = ""
    if bootstrap:
        groups = bootstrap.get("n_groups")
        unit = f"{groups} groups" if bootstrap.get("unit") == "group" and groups else f"{bootstrap.get('unit')}s"
        boot = (
            f'<p class="muted">Confidence intervals: {_esc(bootstrap.get("n_resamples"))} bootstrap resamples of '
            f"{_esc(unit)}, seed {_esc(bootstrap.get('seed'))}"
            + (f"; {_esc(bootstrap.get('note'))}" if bootstrap.get("note") else "")
            + ".</p>"
        )
    return (
        "<p>Signature (it pins the models and settings: reports with equal signatures are comparable): "
        f'<code id="signature">{_esc(report.get("signature"))}</code></p>{boot}'
        '<table id="models"><thead><tr><th>model</th><th>what it does here</th><th>weights from</th>'
        f"<th>sha256</th><th>version</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
