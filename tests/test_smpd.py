"""The SMPD reader on tiny folders in the official layout (written by the tests)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from typer.testing import CliRunner

import pipeline.cli as cli
from pipeline.core.errors import PostsError
from pipeline.data.contract import load_posts, user_feature_columns
from pipeline.data.ingest import read_posts_file

pytestmark = pytest.mark.smpd

POSTS = [  # (Uid, Pid, Postdate, label, Title, Alltags, Category, Subcategory, Concept)
    ("59@N75", "775", 1446016778, 11.18, "Morning light", "sun  sky lake", "Travel", "Lake", "lake"),
    ("59@N75", "776", 1446020000, 9.5, "", "", "Travel", "Lake", "pier"),
    ("12@N01", "42", 1440000000, 3.25, "Cat", "cat pet", "Animal", "Pet", "cat"),
]


def _write(d, prefix, records, as_columns=False):
    (d / f"{prefix}").write_text(json.dumps(records))


def make_smpd(d, split="train", title_key="Title", user_data="records", labels=True, images=True):
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{split}_img_filepath.txt").write_text("".join(f"{split}/{u}/{p}.jpg\n" for u, p, *_ in POSTS))
    if images:
        for u, p, *_ in POSTS:
            (d / split / u).mkdir(parents=True, exist_ok=True)
            (d / split / u / f"{p}.jpg").write_bytes(b"jpeg")
    if labels:
        (d / f"{split}_label.txt").write_text("".join(f"{r[3]}\n" for r in POSTS))
    # records in a different order than the paths: matched by Pid
    rev = list(reversed(POSTS))
    _write(d, f"{split}_category.json", [{"Uid": u, "Pid": int(p), "Category": c, "Subcategory": s, "Concept": k}
                                         for u, p, _, _, _, _, c, s, k in rev])
    _write(d, f"{split}_text.json", [{"Uid": u, "Pid": p, title_key: t, "Mediatype": "photo", "Alltags": a}
                                     for u, p, _, _, t, a, *_ in rev])
    _write(d, f"{split}_temporalspatial_information.json",
           [{"Uid": u, "Pid": p, "Postdate": str(ts), "Latitude": "0", "Longitude": "0", "Geoaccuracy": "0"}
            for u, p, ts, *_ in rev])
    users = [{"Uid": u, "Pid": p, "photo_count": 10 * i, "ispro": i % 2, "timezone_offset": "+08:00",
              "photo_firstdate": "1100000000", "photo_firstdatetaken": "2004-01-01 00:00:00",
              "timezone_id": "Asia/Shanghai", "user_description": "I take photos"}
             for i, (u, p, *_) in enumerate(POSTS)]
    if user_data == "columns":  # pandas to_json default: {column: {index: value}}, aligned with the paths
        cols = {k: {str(i): r[k] for i, r in enumerate(users)} for k in users[0]}
        _write(d, f"{split}_user_data.json", cols)
    elif user_data == "per_user":  # keyed by Uid only, one record per user
        per = {r["Uid"]: {k: v for k, v in r.items() if k != "Pid"} for r in users}
        _write(d, f"{split}_user_data.json", list(per.values()))
    else:
        _write(d, f"{split}_user_data.json", users)
    return d


def test_train_split_maps_to_the_contract(tmp_path):
    d = make_smpd(tmp_path / "smpd")
    df = read_posts_file(d)  # auto-detected: a folder holding train_img_filepath.txt
    assert df["post_id"].to_list() == ["775", "776", "42"]  # row order = img_filepath.txt
    assert df["user_id"].to_list() == ["59@N75", "59@N75", "12@N01"]
    assert df["score"].to_list() == [11.18, 9.5, 3.25]
    assert df["posted_at"][0] == datetime.fromtimestamp(1446016778, timezone.utc)
    assert df["image"].to_list() == [str(d / "train" / u / f"{p}.jpg") for u, p, *_ in POSTS]
    assert df["title"].to_list() == ["Morning light", None, "Cat"]
    assert df["tags"].to_list() == [["sun", "sky", "lake"], None, ["cat", "pet"]]
    assert df["category"].to_list() == ["Travel", "Travel", "Animal"]
    assert df["concept"].to_list() == ["lake", "pier", "cat"]
    feats = user_feature_columns(df)
    assert {"user_photo_count", "user_ispro", "user_timezone_offset", "user_photo_firstdate",
            "user_photo_firstdatetaken"} <= set(feats)
    assert not any("description" in c or "timezone_id" in c for c in feats)
    assert df["user_photo_count"].to_list() == [0.0, 10.0, 20.0]
    assert df["user_timezone_offset"].to_list() == [8.0] * 3
    assert df["user_photo_firstdatetaken"][0] == datetime(2004, 1, 1, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("user_data", ["columns", "per_user"])
def test_tile_spelling_and_user_data_shapes(tmp_path, user_data):
    d = make_smpd(tmp_path / "smpd", title_key="Tile", user_data=user_data)
    df = read_posts_file(d, fmt="smpd")
    assert df["title"].to_list() == ["Morning light", None, "Cat"]
    want = [0.0, 10.0, 20.0] if user_data == "columns" else [10.0, 10.0, 20.0]  # per user: first record wins
    assert df["user_photo_count"].to_list() == want


def test_test_split_needs_unlabelled_and_missing_optional_files(tmp_path):
    d = make_smpd(tmp_path / "smpd", split="test", labels=False)
    (d / "test_category.json").unlink()
    (d / "test_user_data.json").unlink()
    with pytest.raises(PostsError, match="test_img_filepath.txt: no 'score' column.*--unlabelled"):
        read_posts_file(d)
    df = read_posts_file(d, unlabelled=True)
    assert df["score"].null_count() == 3 and df["category"].null_count() == 3
    assert user_feature_columns(df) == []
    assert df["image"][0] == str(d / "test" / "59@N75" / "775.jpg")


def test_errors_name_the_smpd_files(tmp_path):
    d = make_smpd(tmp_path / "smpd")
    (d / "train_label.txt").write_text("1.0\n2.0\n")
    with pytest.raises(PostsError, match="train_label.txt: 2 labels for the 3 image paths"):
        read_posts_file(d)
    d = make_smpd(tmp_path / "smpd2")
    (d / "train_img_filepath.txt").write_text("train/59@N75/775.jpg\ntrain/59@N75/776.jpg\ntrain/x/775.jpg\n")
    (d / "train_label.txt").write_text("1\n2\n3\n")
    with pytest.raises(PostsError, match=r"(?s)train_img_filepath.txt.*duplicate post id \(first at line 1\): line 3"):
        read_posts_file(d)
    (d / "train_temporalspatial_information.json").unlink()
    with pytest.raises(PostsError, match="train_temporalspatial_information.json; posting times"):
        read_posts_file(d)
    with pytest.raises(PostsError, match="no test_img_filepath.txt"):
        read_posts_file(d, split="test")


def test_ingest_cli_with_split_and_images_one_folder_up(tmp_path):
    root = tmp_path / "SMPD"
    d = make_smpd(root / "train_allmetadata_json", images=False)
    for u, p, *_ in POSTS:  # images beside the metadata folder, paths relative to its parent
        (root / "train" / u).mkdir(parents=True, exist_ok=True)
        (root / "train" / u / f"{p}.jpg").write_bytes(b"jpeg")
    cli._load_commands()
    r = CliRunner().invoke(cli.app, ["ingest", str(d), "--name", "smpd", "--cache", str(tmp_path / "c"), "--split", "train"])
    assert r.exit_code == 0, r.output
    df = load_posts("smpd", tmp_path / "c")
    assert df["post_id"].to_list() == ["42", "775", "776"]  # sorted by time
    assert df["image"][0] == str(root / "train" / "12@N01" / "42.jpg")


def test_folder_detection(tmp_path):
    d = make_smpd(tmp_path / "smpd")
    with pytest.raises(PostsError, match="a folder; --format generic"):
        read_posts_file(d, fmt="generic")
    (tmp_path / "plain").mkdir()
    with pytest.raises(PostsError, match="not in the SMPD layout"):
        read_posts_file(tmp_path / "plain")
    assert read_posts_file(d / "train_img_filepath.txt", fmt="smpd").height == 3
