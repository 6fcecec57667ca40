"""Data preparation (prep/ and its command lines data/*.py, convert_dataset.py, split.py, merge.py):
k-core, windows, the global time split, the original's numbering, ML-100k and Amazon 2018 readers,
both layouts (ours and the original's), the conversion to split CSVs, test chunks and their merge —
on tiny hand-made logs written into tmp_path."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

import data
from prep import amazon18, interactions, ml100k, shards
from prep import convert as convert_module
from prep.layout import SPLITS, DatasetFiles, SplitFiles
from runtime import InputError

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO.parent / "shared" / "upstream"


def entry_point(script):
    """A command-line script of the repository imported as a module (not run)."""
    path = REPO / script
    spec = importlib.util.spec_from_file_location(f"entry_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


amazon18_data_process = entry_point("data/amazon18_data_process.py")
prepare_ml100k = entry_point("data/prepare_ml100k.py")
convert_dataset = entry_point("convert_dataset.py")


def make_log(rows):
    """rows: (user, item, timestamp)."""
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype(
        {"user_id": str, "item_id": str, "timestamp": float}
    )


def toy_meta(items):
    return {str(i): {"title": f"Item {i}", "description": f"about {i}"} for i in items}


# ---------------------------------------------------------------------------------------------
# the recipe


def test_k_core_filter_is_iterated_until_stable():
    # u1..u3 rate a,b; u4 rates a and c once each. With k=2: c (1 rating) goes, which leaves u4 with
    # one rating, so u4 goes in the second pass, which leaves a with 3 ratings (still >= 2).
    rows = [(u, i, 0) for u in ("u1", "u2", "u3") for i in ("a", "b")] + [("u4", "a", 0), ("u4", "c", 0)]
    kept = interactions.k_core_filter(make_log(rows), user_k=2, item_k=2)
    assert sorted(set(kept["user_id"])) == ["u1", "u2", "u3"]
    assert sorted(set(kept["item_id"])) == ["a", "b"]
    assert len(kept) == 6


def test_k_core_filter_cascades_to_nothing():
    rows = [("u1", "a", 0), ("u1", "b", 0), ("u2", "a", 0)]
    assert interactions.k_core_filter(make_log(rows), 2, 2).empty


def windows_of(rows, max_history=3):
    log = make_log(rows).assign(row_order=lambda f: range(len(f)))
    log = log.assign(user_index=log["user_id"].map({"u1": 0, "u2": 1}), item_index=log["item_id"].astype(int))
    return interactions.sliding_windows(log, max_history)


def test_sliding_windows_are_chronological_and_capped():
    # u1's items arrive out of file order; equal timestamps keep file order (item 3 before item 4)
    rows = [("u1", "2", 20), ("u1", "1", 10), ("u1", "3", 30), ("u1", "4", 30), ("u1", "5", 50), ("u2", "7", 5),
            ("u2", "8", 6)]
    windows = windows_of(rows, max_history=3)
    u1 = windows[windows["user_id"] == "u1"]
    assert u1["history"].tolist() == [[1], [1, 2], [1, 2, 3], [2, 3, 4]]
    assert u1["item_id"].tolist() == [2, 3, 4, 5]
    assert u1["timestamp"].tolist() == [20, 30, 30, 50]
    u2 = windows[windows["user_id"] == "u2"]
    assert u2["history"].tolist() == [[7]] and u2["item_id"].tolist() == [8]


def test_global_time_split_is_by_target_time_with_stable_ties():
    # 10 windows: u1 targets at t=1..5, u2 at t=1..5 -> ties at every time, broken by user
    rows = [(u, str(i), t) for u in ("u1", "u2") for i, t in enumerate(range(0, 6))]
    splits = interactions.chronological_split(windows_of(rows, max_history=10))
    assert [len(splits[s]) for s in SPLITS] == [8, 1, 1]
    order = pd.concat(splits.values())
    assert order["timestamp"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert order["user_id"].tolist() == ["u1", "u2"] * 5
    assert splits["valid"]["user_id"].tolist() == ["u1"] and splits["test"]["user_id"].tolist() == ["u2"]


def write_prepared(tmp_path, n_users=12, n_items=6):
    """Every user rates every item, one per day, starting on a user-specific day."""
    rows = [(f"user{u}", f"raw{(u + k) % n_items}", 1000 + 86400 * (u + k)) for u in range(n_users) for k in range(n_items)]
    meta = {f"raw{i}": {"title": f"Movie {i}", "description": f"genre {i % 2}"} for i in range(n_items)}
    meta["never_rated"] = {"title": "Unrated", "description": ""}
    stats = interactions.prepare_dataset(make_log(rows), meta, DatasetFiles(tmp_path), user_k=5, item_k=5)
    return rows, stats


def test_prepare_dataset_writes_remapped_items_and_inter_files(tmp_path):
    rows, stats = write_prepared(tmp_path)
    assert stats["users"] == 12 and stats["items"] == 6 and stats["interactions"] == len(rows)
    item_meta = data.read_item_meta(tmp_path / "item.json")
    assert list(item_meta) == [str(i) for i in range(6)]  # unrated item dropped, ids 0..n-1
    # ids follow first interaction: user0 rates raw0 first, then raw1, ...
    assert item_meta["0"]["title"] == "Movie 0" and item_meta["1"]["title"] == "Movie 1"
    mapping = dict(line.split("\t") for line in (tmp_path / "item2id.tsv").read_text().splitlines())
    assert mapping["raw3"] == "3"
    split_rows = {s: interactions.read_inter(tmp_path / f"{s}.inter") for s in SPLITS}
    n_windows = sum(len(r) for r in split_rows.values())
    assert n_windows == 12 * 5 and len(split_rows["train"]) == int(n_windows * 0.8)
    for user, history, item, _ in split_rows["train"]:
        assert 1 <= len(history) <= 10 and item not in history
    header = (tmp_path / "test.inter").read_text().splitlines()[0]
    assert header == "\t".join(interactions.INTER_HEADER + (interactions.TIMESTAMP_HEADER,))
    users = dict(line.split("\t") for line in (tmp_path / "user2id.tsv").read_text().splitlines())
    assert users["user0"] == "0" and users["user11"] == "11"
    sequences = json.loads((tmp_path / "inter.json").read_text())
    assert sequences["0"] == [0, 1, 2, 3, 4, 5] and len(sequences) == 12


def test_numbering_is_the_originals_not_first_in_time():
    # u2 comes first in the file, so it is user 0 and its items (by time) are numbered first, although
    # u1 rated z before anyone rated anything
    log = make_log([("u2", "x", 50), ("u1", "y", 10), ("u1", "z", 5), ("u2", "y", 60)]).assign(row_order=range(4))
    numbered = interactions.number_like_the_original(log)
    assert dict(zip(numbered["user_id"], numbered["user_index"])) == {"u2": 0, "u1": 1}
    assert dict(zip(numbered["item_id"], numbered["item_index"])) == {"x": 0, "y": 1, "z": 2}


def test_read_atomic_reports_a_missing_timestamp_column():
    text = "user_id:token\titem_id:token\trating:float\n1\t2\t3\n"
    with pytest.raises(data.DataFormatError, match="missing column 'timestamp'") as err:
        interactions.read_atomic(text, "ratings.inter", ("user_id", "item_id", "timestamp"))
    assert err.value.field == "timestamp" and err.value.line == 1


def test_numeric_column_reports_the_bad_line():
    frame = interactions.read_atomic("timestamp:float\n5\n\nsoon\n", "x.inter", ("timestamp",))
    with pytest.raises(data.DataFormatError, match="not a number") as err:
        interactions.numeric_column(frame, "timestamp", "x.inter")
    assert err.value.line == 3


# ---------------------------------------------------------------------------------------------
# conversion to split CSVs


def sid_index(n_items):
    return {str(i): [f"<a_{i % 3}>", f"<b_{i}>", f"<c_{i % 2}>"] for i in range(n_items)}


def test_convert_dataset_writes_csvs_the_data_layer_reads(tmp_path):
    write_prepared(tmp_path)
    data.write_index(sid_index(6), tmp_path / "index.json")
    out = tmp_path / "converted"
    counts = convert_module.convert_dataset(tmp_path, out)
    index, item_meta = data.read_index(out / "index.json"), data.read_item_meta(out / "item.json")
    inter = interactions.read_inter(tmp_path / "train.inter")
    rows = data.read_split_csv(out / "train.csv", index=index, item_meta=item_meta)
    assert counts["train"] == len(rows) == len(inter)
    first = rows[0]
    assert first.user_id == inter[0][0] and list(first.history_item_id) == inter[0][1]
    assert first.item_sid == data.sid_string(index[str(first.item_id)])
    assert first.history_item_title == tuple(item_meta[str(i)]["title"] for i in first.history_item_id)
    assert len(data.read_info(out / "info.txt")) == 6


def test_convert_dataset_refuses_history_items_missing_from_the_index(tmp_path):
    write_prepared(tmp_path)
    index = sid_index(6)
    del index["4"]
    data.write_index(index, tmp_path / "index.json")
    with pytest.raises(data.DataFormatError, match="item 4 has no SID in the index") as err:
        convert_module.convert_dataset(tmp_path)
    assert err.value.line is not None and err.value.path.endswith(".inter")
    assert not list(tmp_path.glob("*.csv"))  # nothing half-written


def test_convert_dataset_reads_upstream_inter_files_without_timestamps(tmp_path):
    (tmp_path / "train.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n7\t0 1\t2\n")
    (tmp_path / "valid.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n7\t0 1 2\t3\n")
    (tmp_path / "test.inter").write_text("user_id:token\titem_id_list:token_seq\titem_id:token\n7\t1 2 3\t4\n")
    data.write_json(toy_meta(range(5)), tmp_path / "item.json")
    data.write_index(sid_index(5), tmp_path / "index.json")
    assert convert_dataset.main(["--data_dir", str(tmp_path)]) == {"train": 1, "valid": 1, "test": 1}
    row = data.read_split_csv(tmp_path / "test.csv")[0]
    assert row.history_item_id == (1, 2, 3) and row.item_id == 4 and row.user_id == "7"


# ---------------------------------------------------------------------------------------------
# MovieLens-100k (a fake recbole wheel with the same layout)


ML_ITEMS = [("1", "Toy Story", "1995", "Animation Children's Comedy"),
            ("2", "Usual Suspects, The", "1995", "Crime Thriller"),
            ("3", "Psycho", "1960", "Horror"), ("4", "Heat", "1995", "Action"),
            ("5", "Fargo", "1996", "Crime Drama"), ("6", "Unrated Film", "1990", "Drama")]


def fake_recbole_wheel(folder, inter_header="user_id:token\titem_id:token\trating:float\ttimestamp:float"):
    ratings = [f"{u}\t{i}\t4\t{880000000 + 1000 * u + 10 * i}" for u in range(1, 8) for i in range(1, 6)]
    items = [f"{i}\t{t}\t{y}\t{g}" for i, t, y, g in ML_ITEMS]
    wheel = Path(folder) / f"recbole-{ml100k.RECBOLE_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(ml100k.ML100K_FOLDER + "ml-100k.inter", "\n".join([inter_header, *ratings]) + "\n")
        z.writestr(ml100k.ML100K_FOLDER + "ml-100k.item",
                   "\n".join(["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq", *items]) + "\n")
    return wheel


def test_movie_fields_titles_years_and_genres():
    fields = ml100k.movie_fields("Usual Suspects, The", "1995", ["Crime", "Thriller"])
    assert fields == {"title": "The Usual Suspects (1995)",
                      "description": "Released in 1995. Genres: Crime, Thriller.",
                      "categories": "Crime, Thriller"}
    assert ml100k.movie_fields("Heat", "", [])["title"] == "Heat"


def test_prepare_ml100k_from_the_wheel_in_the_cache(tmp_path, monkeypatch):
    fake_recbole_wheel(tmp_path)
    monkeypatch.setenv("MINIONEREC_CACHE", str(tmp_path))
    assert ml100k.fetch_recbole_wheel(ml100k.default_cache_dir()).parent == tmp_path  # no download
    stats = prepare_ml100k.main(["--output_dir", str(tmp_path / "ml")])
    assert stats["users"] == 7 and stats["items"] == 5  # "Unrated Film" has no ratings
    titles = {f["title"] for f in data.read_item_meta(tmp_path / "ml" / "item.json").values()}
    assert "The Usual Suspects (1995)" in titles and "Unrated Film (1990)" not in titles


def test_prepare_ml100k_reports_a_missing_timestamp_column(tmp_path):
    wheel = fake_recbole_wheel(tmp_path, inter_header="user_id:token\titem_id:token\trating:float\ttime:float")
    with pytest.raises(data.DataFormatError, match="missing column 'timestamp'"):
        ml100k.read_ml100k(wheel)


def test_real_ml100k_when_cached(tmp_path):
    wheels = sorted(ml100k.default_cache_dir().glob(f"recbole-{ml100k.RECBOLE_VERSION}-*.whl"))
    if not wheels:
        pytest.skip("recbole wheel not in the cache (run data/prepare_ml100k.py once to fetch it)")
    stats = prepare_ml100k.main(["--output_dir", str(tmp_path), "--wheel_path", str(wheels[0])])
    assert (stats["users"], stats["items"]) == (943, 1349)
    assert stats["train_windows"] + stats["valid_windows"] + stats["test_windows"] == stats["interactions"] - 943


# ---------------------------------------------------------------------------------------------
# Amazon 2018


def write_amazon_fixture(folder, reviews_name="Office.json.gz"):
    day = 86400
    start, end = amazon18.month_start(2017, 1), amazon18.month_start(2018, 1)
    reviews = [{"reviewerID": f"U{u}", "asin": f"B{(u + k) % 6}", "overall": 5.0, "unixReviewTime": int(start + day * (u + k))}
               for u in range(8) for k in range(6)]
    reviews.append({"reviewerID": "U0", "asin": "B1", "overall": 1.0, "unixReviewTime": int(start - day)})  # too early
    reviews.append({"reviewerID": "U1", "asin": "B2", "overall": 1.0, "unixReviewTime": int(end)})  # last instant: kept
    reviews.append({"reviewerID": "U2", "asin": "B3", "overall": 1.0, "unixReviewTime": int(end + day)})  # too late
    meta = [{"asin": f"B{i}", "title": f"Pen &amp; Paper set {i}", "brand": "by\n    ACME",
             "description": [f"<b>Great</b> pen {i}.", "Writes well."], "category": ["Office Products", "Pens"]}
            for i in range(5)]
    meta.append({"asin": "B5", "title": " ".join(["word"] * 21), "description": []})  # title too long
    random.Random(0).shuffle(reviews)  # file order is neither user nor time order (the numbering depends on it)
    reviews_path, meta_path = Path(folder) / reviews_name, Path(folder) / "meta_Office.json"
    text = "".join(json.dumps(r) + "\n" for r in reviews)
    if reviews_name.endswith(".gz"):
        with gzip.open(reviews_path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        reviews_path.write_text(text)
    meta_path.write_text("".join(json.dumps(m) + "\n" for m in meta))
    return reviews_path, meta_path


WINDOW_2017 = ["--st_year", "2017", "--st_month", "1", "--ed_year", "2018", "--ed_month", "1"]


def test_amazon18_data_process_our_command_line(tmp_path):
    reviews_path, meta_path = write_amazon_fixture(tmp_path)
    out = tmp_path / "out"
    stats = amazon18_data_process.main([
        "--reviews_file", str(reviews_path), "--metadata_file", str(meta_path), "--output_dir", str(out),
        "--min_items", "0", *WINDOW_2017])
    assert stats["items"] == 5 and stats["users"] == 8  # B5's title is too long; early review outside window
    item_meta = data.read_item_meta(out / "item.json")
    entry = item_meta["0"]
    assert entry["title"].startswith("Pen & Paper set")
    assert entry["description"].startswith("Great pen") and "<b>" not in entry["description"]
    assert entry["brand"] == "ACME" and entry["categories"] == "Office Products, Pens"
    # every user has 5 rated items left (B5 dropped) -> 4 windows each, plus U1's review at the
    # window's last instant (the original keeps both ends)
    assert sum(len(interactions.read_inter(out / f"{s}.inter")) for s in SPLITS) == 8 * 4 + 1


def test_amazon18_data_process_original_command_line_and_layout(tmp_path, monkeypatch):
    # the original's defaults: inputs ../<dataset>.json and ../meta_<dataset>.json, outputs
    # <output_path>/<dataset>/<dataset>.*; fewer than 3000 items -> the window starts earlier
    write_amazon_fixture(tmp_path, reviews_name="Office.json")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    stats = amazon18_data_process.main(["--dataset", "Office", "--output_path", "./Amazon18", *WINDOW_2017])
    assert stats["st_year"] == 1996  # widened: the early review is in
    folder = work / "Amazon18" / "Office"
    assert sorted(p.name for p in folder.iterdir()) == [
        "Office.inter.json", "Office.item.json", "Office.item2id", "Office.test.inter", "Office.train.inter",
        "Office.user2id", "Office.valid.inter"]
    lines = (folder / "Office.train.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id_list:token_seq\titem_id:token"  # the original's 3 columns
    assert all(len(line.split("\t")) == 3 for line in lines)
    n_windows = sum(len(interactions.read_inter(folder / f"Office.{s}.inter")) for s in SPLITS)
    assert n_windows == 8 * 4 + 2  # + U0's early review, + U1's last-instant review
    assert len(data.read_item_meta(folder / "Office.item.json")) == 5

    # then the original's convert_dataset.py command line on that folder
    data.write_index(sid_index(5), folder / "Office.index.json")
    counts = convert_dataset.main(["--dataset_name", "Office", "--data_dir", str(folder), "--output_dir",
                                   str(work / "Amazon"), "--category", "Office_Products"])
    split_files = SplitFiles(work / "Amazon", "Office_Products")
    assert split_files.csv("train") == work / "Amazon" / "train" / "Office_Products_5_2016-10-2018-11.csv"
    index = data.read_index(work / "Amazon" / "index" / "Office_Products.index.json")
    item_meta = data.read_item_meta(work / "Amazon" / "index" / "Office_Products.item.json")
    for split in SPLITS:
        rows = data.read_split_csv(split_files.csv(split), index=index, item_meta=item_meta)
        assert len(rows) == counts[split] and all(r.user_id.startswith("A") for r in rows)
    assert sum(counts.values()) == n_windows
    assert len(data.read_info(work / "Amazon" / "info" / "Office_Products_5_2016-10-2018-11.txt")) == 5


def test_amazon18_both_layouts_at_once_is_an_error(tmp_path):
    with pytest.raises(InputError, match="not both"):
        amazon18_data_process.main(["--output_dir", str(tmp_path), "--output_path", str(tmp_path)])


def test_amazon18_review_without_timestamp_is_an_error(tmp_path):
    reviews = tmp_path / "r.json"
    reviews.write_text(json.dumps({"reviewerID": "U", "asin": "B", "unixReviewTime": 1}) + "\n"
                       + json.dumps({"reviewerID": "U", "asin": "B"}) + "\n")
    with pytest.raises(data.DataFormatError, match="unixReviewTime") as err:
        amazon18.read_reviews(reviews)
    assert err.value.line == 2



@pytest.mark.skipif(not (UPSTREAM / "convert_dataset.py").is_file(), reason="../shared/upstream (the original) is absent")
def test_convert_dataset_matches_the_original_script_row_for_row(tmp_path):
    """The original convert_dataset.py and ours, same command line (with its sampling and
    longest-window options), same input: the same rows in the same order in every split."""
    prepared = tmp_path / "Toy"
    rows = [(f"user{u}", f"raw{(3 * u + k) % 9}", 1000 + 86400 * (u + 2 * k)) for u in range(20) for k in range(7)]
    meta = {f"raw{i}": {"title": f"Thing {i}", "description": ""} for i in range(9)}
    interactions.prepare_dataset(make_log(rows), meta, DatasetFiles(prepared, "Toy"), user_k=5, item_k=5)
    data.write_index(sid_index(9), prepared / "Toy.index.json")
    flags = ["--dataset_name", "Toy", "--data_dir", str(prepared), "--category", "Toy_Store",
             "--max_valid_samples", "5", "--max_test_samples", "7", "--seed", "3", "--keep_longest_only"]
    subprocess.run([sys.executable, str(UPSTREAM / "convert_dataset.py"), *flags, "--output_dir", str(tmp_path / "theirs")],
                   check=True, capture_output=True, text=True, timeout=120)
    convert_dataset.main([*flags, "--output_dir", str(tmp_path / "ours")])
    for split in SPLITS:
        theirs = data.read_split_csv(SplitFiles(tmp_path / "theirs", "Toy_Store").csv(split))
        ours = data.read_split_csv(SplitFiles(tmp_path / "ours", "Toy_Store").csv(split))
        assert [dataclass_fields(r) for r in ours] == [dataclass_fields(r) for r in theirs], split
    assert len(ours) == 7


def dataclass_fields(row):
    return (row.user_id, row.history_item_id, row.item_id, row.history_item_sid, row.item_sid, row.item_title)


def test_convert_dataset_without_either_layout_names_both(tmp_path):
    with pytest.raises(InputError, match="train.inter.*Industrial_and_Scientific.train.inter"):
        convert_dataset.main(["--data_dir", str(tmp_path)])


# ---------------------------------------------------------------------------------------------
# split.py / merge.py (the original evaluate.sh's chunking)


@pytest.mark.parametrize("value, names", [("0,1,2", ["0", "1", "2"]), ("0 1", ["0", "1"]), ("[4, 5]", ["4", "5"]),
                                          ("(0,1)", ["0", "1"]), ("3", ["3"]), (2, ["2"]), ((0, 1), ["0", "1"])])
def test_shard_names_read_fire_style_lists(value, names):
    assert shards.shard_names(value) == names


@pytest.mark.parametrize("value", ["", ",", "0,0"])
def test_shard_names_reject_empty_or_repeated(value):
    with pytest.raises(InputError, match="--cuda_list"):
        shards.shard_names(value)


def test_split_then_merge_round_trip_the_rows_in_order(tmp_path):
    test_csv = tmp_path / "test.csv"
    index = sid_index(6)
    rows = [{"user_id": f"u{i}", "history_item_title": ["t"], "item_title": "t", "history_item_id": [i % 6],
             "item_id": (i + 1) % 6, "history_item_sid": [data.sid_string(index[str(i % 6)])],
             "item_sid": data.sid_string(index[str((i + 1) % 6)])} for i in range(11)]
    data.write_split_csv(rows, test_csv)
    split = entry_point("split.py")
    merge = entry_point("merge.py")
    assert split.main(["--input_path", str(test_csv), "--output_path", str(tmp_path / "chunks"), "--cuda_list", "0,1,2"]) == 0
    chunks = [data.read_split_csv(tmp_path / "chunks" / f"{i}.csv") for i in range(3)]
    assert [len(c) for c in chunks] == [3, 4, 4]  # the original's i*n//k cut
    assert [r.user_id for c in chunks for r in c] == [f"u{i}" for i in range(11)]
    assert (tmp_path / "chunks" / "1.csv").read_text().startswith(",user_id,")  # row numbers, as the original
    # each chunk's predictions, merged back in --cuda_list order
    for i, chunk in enumerate(chunks):
        data.write_json([{"output": r.item_sid + "\n", "predict": [r.item_sid]} for r in chunk],
                        tmp_path / "chunks" / f"{i}.json")
    merged = tmp_path / "final.json"
    assert merge.main(["--input_path", str(tmp_path / "chunks"), "--output_path", str(merged), "--cuda_list", "0,1,2"]) == 0
    assert [r["predict"][0] for r in json.loads(merged.read_text())] == [r["item_sid"] for r in rows]


def test_merge_names_a_truncated_chunk(tmp_path):
    (tmp_path / "0.json").write_text('[{"output": "<a_1>", "predict": ["<a_1>"]}')
    with pytest.raises(data.DataFormatError, match="0.json.*invalid JSON"):
        shards.merge_predictions(tmp_path, tmp_path / "out.json", ["0"])
    with pytest.raises(InputError, match="1.json: predictions chunk not found"):
        shards.merge_predictions(tmp_path, tmp_path / "out.json", ["1"])
    assert not (tmp_path / "out.json").exists()


@pytest.mark.skipif(not (UPSTREAM / "data" / "amazon18_data_process.py").is_file(),
                    reason="../shared/upstream (the original) is absent")
def test_amazon18_data_process_matches_the_original_script(tmp_path):
    """The original amazon18_data_process.py and ours, same command line and raw files: the same
    split files line for line, the same item and user numbering, the same titles."""
    reviews_path, meta_path = write_amazon_fixture(tmp_path, reviews_name="Office.json")
    flags = ["--dataset", "Office", "--reviews_file", str(reviews_path), "--metadata_file", str(meta_path), *WINDOW_2017]
    env = {**os.environ, "TZ": "UTC"}  # the original's month starts are local time
    subprocess.run([sys.executable, str(UPSTREAM / "data" / "amazon18_data_process.py"), *flags,
                    "--output_path", str(tmp_path / "theirs")], check=True, capture_output=True, env=env, timeout=300)
    amazon18_data_process.main([*flags, "--output_path", str(tmp_path / "ours")])
    theirs, ours = DatasetFiles(tmp_path / "theirs" / "Office", "Office"), DatasetFiles(tmp_path / "ours" / "Office", "Office")
    for kind in ("train.inter", "valid.inter", "test.inter", "item2id", "user2id"):
        assert ours.path(kind).read_text() == theirs.path(kind).read_text(), kind
    assert json.loads(ours.path("inter.json").read_text()) == json.loads(theirs.path("inter.json").read_text())
    their_items = json.loads(theirs.path("item.json").read_text())
    assert {i: f["title"] for i, f in data.read_item_meta(ours.path("item.json")).items()} == {
        i: f["title"] for i, f in their_items.items()}


def test_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "reviews.json.gz"
    payload = gzip.compress("".join(json.dumps({"a": i}) + "\n" for i in range(2000)).encode())
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(data.DataFormatError, match="reviews.json.gz.*unreadable after line"):
        list(amazon18.json_lines(path, "reviews"))
