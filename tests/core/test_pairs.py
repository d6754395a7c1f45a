import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emopres_client.pairs import (
    ManifestError,
    PairSpec,
    check_relative_path,
    parse_pairs,
    read_pairs_file,
    uses_groups,
)


def test_csv_with_labels_and_groups():
    text = "pair_id,source,target,label,speaker\np1,a.wav,b.wav,joy,s1\np2,c.wav,d.wav,,s2\n"
    pairs = parse_pairs(text, name="x.csv", group_column="speaker")
    assert pairs == [PairSpec("p1", "a.wav", "b.wav", "joy", "s1"), PairSpec("p2", "c.wav", "d.wav", None, "s2")]


def test_jsonl_and_default_group_column():
    text = "\n".join(json.dumps(r) for r in [{"pair_id": 1, "source": "a", "target": "b", "group": "g"}]) + "\n\n"
    assert parse_pairs(text) == [PairSpec("1", "a", "b", None, "g")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("pair_id,source,target\n", "no pairs"),
        ("pair_id,source\np,a\n", "missing column.*target"),
        ("pair_id,source,target\np,a,b\np,c,d\n", "duplicate pair_id 'p'"),
        ("pair_id,source,target\np,,b\n", "must not be empty"),
        ('{"pair_id": "p", "source": "a"\n', "line 1 is not valid JSON"),
        ("[1, 2]\n", "not a JSON object"),
    ],
)
def test_unusable_files_give_one_clear_message(text, message):
    with pytest.raises(ManifestError, match=message):
        parse_pairs(text)


def test_the_default_group_column_is_group_else_speaker_and_none_ignores_both():
    text = "pair_id,source,target,speaker\np1,a.wav,b.wav,s1\n"
    assert parse_pairs(text, name="x.csv") == [PairSpec("p1", "a.wav", "b.wav", None, "s1")]
    both = "pair_id,source,target,speaker,group\np1,a.wav,b.wav,s1,g1\n"
    assert parse_pairs(both, name="x.csv")[0].group == "g1"
    assert parse_pairs(both, name="x.csv", group_column="speaker")[0].group == "s1"
    assert parse_pairs(both, name="x.csv", group_column="none")[0].group is None
    pairs = parse_pairs(text, name="x.csv")
    assert uses_groups(pairs, None) and not uses_groups(parse_pairs(text, group_column="none"), "none")


def test_missing_group_column_is_named():
    with pytest.raises(ManifestError, match="group column 'dialogue' not found"):
        parse_pairs("pair_id,source,target\np,a,b\n", group_column="dialogue")


def test_read_pairs_file_errors(tmp_path):
    with pytest.raises(ManifestError, match="cannot read"):
        read_pairs_file(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ManifestError):
        read_pairs_file(tmp_path / "bad.csv")


@pytest.mark.parametrize("path", ["/etc/passwd", "../x.wav", "a/../../x.wav", "C:/x.wav", "", "."])
def test_paths_escaping_the_upload_are_refused(path):
    with pytest.raises(ManifestError):
        check_relative_path(path)


def test_relative_paths_are_normalised():
    assert check_relative_path("a/./b.wav") == "a/b.wav"
    assert check_relative_path("a\\b.wav") == "a/b.wav"


identifier = (
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=12)
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(identifier, identifier, identifier), min_size=1, max_size=8, unique_by=lambda r: r[0]))
def test_any_valid_jsonl_round_trips(rows):
    text = "\n".join(json.dumps({"pair_id": p, "source": s, "target": t}) for p, s, t in rows)
    assert [(p.pair_id, p.source, p.target) for p in parse_pairs(text, name="x.jsonl")] == rows


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_parser_never_crashes_on_garbage(text):
    try:
        pairs = parse_pairs(text)
    except ManifestError:
        return
    assert all(p.pair_id and p.source and p.target for p in pairs)
    assert len({p.pair_id for p in pairs}) == len(pairs)
