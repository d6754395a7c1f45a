"""Fast mode chooses by measurement (issue 17): timings -> choice, the measuring loop, and the
choice recorded in the report signature and in `emopres models check --fast`.

No test times anything: the timer is replaced by one that charges each mode a fixed cost, so the
choice under test is known in advance."""

from __future__ import annotations

import json
import warnings

import pytest

from models.runtime import precision as P

pytest.importorskip("transformers")
pytest.importorskip("funasr")

from tests import paper_fixtures as fx  # noqa: E402


def test_choice_from_timings():
    assert P.choose_precision(1.0, 0.4).mode == "bf16"
    assert P.choose_precision(1.0, 0.4).reason == "bf16-faster"
    slower = P.choose_precision(1.0, 1.7)
    assert (slower.mode, slower.reason) == ("fp32", "bf16-slower")
    assert slower.speedup == pytest.approx(1 / 1.7)
    # a win inside the noise margin keeps exact fp32: fast mode is never slower than exact mode
    assert P.choose_precision(1.0, 0.95).mode == "fp32"
    assert P.choose_precision(1.0, P.FAST_MARGIN).mode == "bf16"
    with pytest.raises(ValueError):
        P.choose_precision(0.0, 1.0)
    with pytest.raises(ValueError):
        P.choose_precision([1.0, 1.0], [0.5])
    # per round: bf16 must win every round, not only its luckiest one
    assert P.choose_precision([1.0, 1.0], [0.5, 0.6]).mode == "bf16"
    assert P.choose_precision([1.0, 1.0], [0.5, 1.2]).mode == "fp32"
    assert P.choose_precision([1.0, 2.0], [0.5, 0.9]).fp32_seconds == 1.0
    assert "exact fp32 kept" in slower.describe() and "0.59x" in slower.describe()


class FakeModel:
    def __init__(self, device="cpu"):
        self.device = device
        self.precision = "fp32"
        self.calls: list[str] = []

    def run(self, waves):
        self.calls.append(self.precision)
        return waves


def charge(costs: dict[str, float]):
    """A stand-in for precision._timed: runs the model, returns the mode's fixed cost."""

    def timed(model, run, waves):
        run(waves)
        return costs[model.precision]

    return timed


@pytest.mark.parametrize("costs,expected", [({"fp32": 1.0, "bf16": 0.5}, "bf16"), ({"fp32": 1.0, "bf16": 1.5}, "fp32")])
def test_measuring_sets_the_faster_mode(monkeypatch, costs, expected):
    monkeypatch.setattr(P, "_timed", charge(costs))
    model = FakeModel()
    choice = P.measure_fast_mode(model, model.run, repeats=2)
    assert choice.mode == expected and model.precision == expected
    assert choice.fp32_seconds == costs["fp32"] and choice.bf16_seconds == costs["bf16"]
    assert model.calls.count("fp32") == 3 and model.calls.count("bf16") == 3  # warm-up + 2 alternating each


def test_hopeless_bf16_is_not_timed_again(monkeypatch):
    monkeypatch.setattr(P, "_timed", charge({"fp32": 1.0, "bf16": 5.0}))
    model = FakeModel()
    assert P.measure_fast_mode(model, model.run, repeats=3).mode == "fp32"
    assert model.calls == ["fp32", "bf16"]


def test_device_without_bf16_stays_exact(monkeypatch):
    monkeypatch.setattr(P, "bf16_runs_on", lambda device: False)
    model = FakeModel("cuda")
    choice = P.measure_fast_mode(model, model.run)
    assert (choice.mode, choice.reason, model.calls) == ("fp32", "no-bf16", [])


def test_a_failing_run_leaves_the_model_exact(monkeypatch):
    def broken(model, run, waves):
        if model.precision == "bf16":
            raise RuntimeError("no bf16 kernel")
        return 1.0

    monkeypatch.setattr(P, "_timed", broken)
    model = FakeModel()
    with pytest.raises(RuntimeError):
        P.measure_fast_mode(model, model.run)
    assert model.precision == "fp32"


def test_signature_mode_names_choices_and_reasons():
    faster, slower = P.choose_precision(1.0, 0.4), P.choose_precision(1.0, 2.0)
    assert P.signature_mode({"e2v": None, "va": None}, {"e2v": "fp32", "va": "fp32"}) == "fp32"
    assert P.signature_mode({"e2v": slower, "va": slower}, {"e2v": "fp32", "va": "fp32"}) == "fp32(fast:bf16-slower)"
    assert (
        P.signature_mode({"e2v": faster, "va": slower}, {"e2v": "bf16", "va": "fp32"})
        == "e2v=bf16,va=fp32(fast:bf16-faster+bf16-slower)"
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fx.build_model_dir(tmp_path_factory.mktemp("paper_models"))


@pytest.mark.parametrize("bf16_cost,mode", [(0.3, "bf16(fast:bf16-faster)"), (1.8, "fp32(fast:bf16-slower)")])
def test_fast_profile_records_its_choice_in_the_signature(model_dir, monkeypatch, bf16_cost, mode):
    from models.paper.profile import PaperProfile

    monkeypatch.setattr(P, "_timed", charge({"fp32": 1.0, "bf16": bf16_cost}))
    profile = PaperProfile.from_model_dir(model_dir, fast=True)
    assert profile.signature_parts()[-1] == f"mode:{mode}"
    choices = profile.fast_choices()
    assert set(choices) == {"e2v", "va", "spk", "xlsr"}
    assert all(c["bf16_seconds"] == bf16_cost and c["fp32_seconds"] == 1.0 for c in choices.values())
    exact = PaperProfile.from_model_dir(model_dir)
    assert exact.signature_parts()[-1] == "mode:fp32" and exact.fast_choices() == {}


def test_models_check_fast_prints_the_choice(model_dir, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.setattr(P, "_timed", charge({"fp32": 1.0, "bf16": 1.6}))
    main(["models", "check", "--model-dir", str(model_dir), "--fast"])
    out = capsys.readouterr().out
    assert out.startswith("bf16 on this CPU: AVX512-BF16 ")
    assert out.count("fast mode: fp32: bf16 1600 ms vs fp32 1000 ms") == 4
    main(["models", "check", "--model-dir", str(model_dir), "--fast", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["valence_arousal"]["fast_mode"]["mode"] == "fp32"
    assert rows["valence_arousal"]["fast_mode"]["reason"] == "bf16-slower"
    assert rows["autopcp_comparator"]["fast_mode"] is None  # a small MLP: always fp32
