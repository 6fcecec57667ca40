"""Data layer: file readers with clear errors, the one prompt builder, SFT/RL/eval datasets."""

import json
import logging

import pytest

import data
from tests import tiny


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny.write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module", params=tiny.TOKENIZER_KINDS)
def tokenizer(request, dataset):
    return tiny.tokenizer_with_sids(request.param, data.read_index(dataset["index"]))


def _sft_datasets(paths, tok, max_len=512):
    common = dict(tokenizer=tok, max_len=max_len, category=paths["category"])
    return {
        "sid_history_to_sid": data.SidSFTDataset(train_file=paths["train"], **common),
        "item": data.SidItemFeatDataset(item_file=paths["item"], index_file=paths["index"], **common),
        "sid_history_to_title": data.FusionSeqRecDataset(train_file=paths["train"], item_file=paths["item"],
                                                         index_file=paths["index"], **common),
        "title_history_to_title": data.SFTData(train_file=paths["train"], **common),
        "title_history_to_sid": data.TitleHistory2SidSFTDataset(train_file=paths["train"], item_file=paths["item"],
                                                                index_file=paths["index"], **common),
    }


# --- readers ------------------------------------------------------------------------------------


def test_split_csv_round_trip(dataset):
    rows = data.read_split_csv(dataset["train"], index=data.read_index(dataset["index"]),
                               item_meta=data.read_item_meta(dataset["item"]))
    again = dataset["train"].with_name("again.csv")
    data.write_split_csv(rows, again)
    assert again.read_text() == dataset["train"].read_text()
    assert rows[0].line == 2 and all(len(r.history_item_id) == len(r.history_item_sid) for r in rows)


def _csv_with(tmp_path, body, header=",".join(data.SPLIT_COLUMNS)):
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n" + body)
    return path


GOOD = "U1,\"['t1']\",t2,[0],1,\"['<a_0><b_0><c_0>']\",<a_0><b_0><c_1>\n"


@pytest.mark.parametrize("body, header, match", [
    (GOOD, "user_id,item_title,history_item_id,item_id,history_item_sid,item_sid", r"line 1: missing column\(s\) \['history_item_title'\]"),
    (GOOD + "U2,\"['t1'\",t2,[0],1,\"['<a_0><b_0><c_0>']\",<a_0><b_0><c_1>\n", None, "line 3, field 'history_item_title': not a list literal"),
    ("U2,[],t2,[],1,[],<a_0><b_0><c_1>\n", None, "line 2, field 'history_item_id': empty history"),
    ("U2,\"['t1']\",t2,[x],1,\"['<a_0><b_0><c_0>']\",<a_0><b_0><c_1>\n", None, "line 2, field 'history_item_id': not a list literal"),
    ("U2,\"['t1']\",t2,[0],one,\"['<a_0><b_0><c_0>']\",<a_0><b_0><c_1>\n", None, "line 2, field 'item_id': not an integer"),
    ("U2,\"['t1']\",t2,[0],1\n", None, "line 2: expected 7 fields, found 5"),
    ("U2,\"['t1']\",t2,[0],1,\"['<a_9><b_9><c_9>']\",<a_0><b_0><c_1>\n", None, "line 2, field 'history_item_sid': history SID '<a_9><b_9><c_9>' is not in the index"),
    ("U2,\"['t1']\",t2,[0],1,\"['<a_0><b_0><c_0>']\",<a_7><b_0><c_1>\n", None, "line 2, field 'item_sid': target SID"),
    ("U2,\"['t1']\",t2,[0],99,\"['<a_0><b_0><c_0>']\",<a_0><b_0><c_1>\n", None, "line 2, field 'item_id': item id 99 is not in item.json"),
])
def test_malformed_csv_rows_name_file_line_and_field(tmp_path, dataset, body, header, match):
    path = _csv_with(tmp_path, body, header or ",".join(data.SPLIT_COLUMNS))
    with pytest.raises(data.DataFormatError, match=match) as err:
        data.read_split_csv(path, index=data.read_index(dataset["index"]), item_meta=data.read_item_meta(dataset["item"]))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", [
    "[1, 22, 333]", "['<a_0><b_1><c_2>', '<a_3><b_4><c_5>']", "['Toy Story (1995)', \"Schindler's List (1993)\"]",
    "['caf\u00e9', 'x, y']", "['a\\'b']", "[1.5, -2]", "[]", "['a',]", "[True, None]",
])
def test_list_literals_parse_as_python_does(text):
    """The JSON fast path of the split-CSV reader gives ast.literal_eval's value on every literal."""
    import ast
    assert list(data.list_literal(text)) == list(ast.literal_eval(text))


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]", "['a'"])
def test_non_python_list_literals_stay_errors(text):
    with pytest.raises((ValueError, SyntaxError)):
        data.list_literal(text)


def test_multiline_fields_keep_true_line_numbers(tmp_path, dataset):
    body = GOOD.replace("t2", '"two\nlines"') + "U2,\"['t1']\",t2,[0],1,\"['<a_0><b_0><c_0>'\",x\n"
    with pytest.raises(data.DataFormatError, match="line 4, field 'history_item_sid'"):
        data.read_split_csv(_csv_with(tmp_path, body))


def test_empty_files_and_bad_json(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(data.DataFormatError, match="empty"):
        data.read_split_csv(empty)
    header_only = _csv_with(tmp_path, "")
    with pytest.raises(data.DataFormatError, match="no data rows"):
        data.read_split_csv(header_only)
    bad = tmp_path / "index.json"
    bad.write_text('{"0": ["<a_1>",\n ]')
    with pytest.raises(data.DataFormatError, match="line 2: invalid JSON"):
        data.read_index(bad)
    bad.write_text('{"0": "<a_1><b_2>"}')
    with pytest.raises(data.DataFormatError, match="item '0'"):
        data.read_index(bad)
    meta = tmp_path / "item.json"
    meta.write_text('{"0": {"description": "no title"}}')
    with pytest.raises(data.DataFormatError, match="field 'title'"):
        data.read_item_meta(meta)
    info = tmp_path / "info.txt"
    info.write_text("<a_1><b_1>\tok\t0\nbroken line\n")
    with pytest.raises(data.DataFormatError, match="line 2"):
        data.read_info(info)
    with pytest.raises(FileNotFoundError):
        data.read_index(tmp_path / "missing.json")


def test_collisions_load_with_one_warning(tmp_path, caplog):
    path = tmp_path / "index.json"
    path.write_text(json.dumps({"0": ["<a_1>", "<b_1>"], "1": ["<a_1>", "<b_1>"], "2": ["<a_1>", "<b_1>"],
                                "3": ["<a_2>", "<b_1>"]}))
    with caplog.at_level(logging.WARNING):
        index = data.read_index(path)
    assert len(index) == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 of 4 items share their SID" in warnings[0].getMessage()


def test_category_phrases():
    assert data.category_phrase("Industrial_and_Scientific") == "industrial and scientific items"
    assert data.category_phrase("Office_Products") == "office products"
    assert data.category_phrase("Home_and_Kitchen") == "home and kitchen items"
    assert data.category_phrase("ml-100k") == "ml 100k items"
    assert data.category_phrase("Sports") == "sports and outdoors"


# --- prompts and tokenisation -------------------------------------------------------------------


def test_prompt_format_is_the_documents():
    prompt = data.build_prompt("Do X.", "some input")
    assert prompt.endswith("### User Input: \nsome input\n\n### Response:\n")
    assert "### Instruction:\nDo X.\n" in prompt


def test_labels_cover_exactly_the_response(dataset, tokenizer):
    for task, ds in _sft_datasets(dataset, tokenizer).items():
        assert len(ds) > 0
        for item, ex in zip(ds.items, ds.examples):
            ids, labels = item["input_ids"], item["labels"]
            n_prompt = sum(1 for x in labels if x == -100)
            assert all(x == -100 for x in labels[:n_prompt]) and -100 not in labels[n_prompt:]
            assert labels[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(ids[:n_prompt], skip_special_tokens=True).endswith("### Response:\n")
            # tokenised on its own, as the documents do; SentencePiece-style tokenizers then
            # start a word-initial response with their space marker
            answer = tokenizer.decode(labels[n_prompt:-1])
            assert answer.removeprefix(" ") == ex.answer, task
            assert item["attention_mask"] == [1] * len(ids)


def test_sid_targets_decode_back_and_unified_stages_share_the_prompt(dataset, tokenizer):
    common = dict(train_file=dataset["train"], max_len=512, category="toy store items", prompt_style="unified")
    sft = data.SidSFTDataset(tokenizer=tokenizer, **common)
    rl = data.SidDataset(**common)
    ev = data.EvalSidDataset(tokenizer=tokenizer, test=True, **common)
    rows = data.read_split_csv(dataset["train"])
    for s, r, e, row in zip(sft.items, rl.items, ev.items, rows):
        n_prompt = s["labels"].count(-100)
        assert s["input_ids"][:n_prompt] == e["input_ids"]
        assert r["prompt"] == e["prompt"] and r["target_sid"] == row.item_sid and r["completion"] == row.item_sid + "\n"
        assert r["history_item_ids"] == list(row.history_item_id)


def test_same_history_different_targets_keep_their_own(tmp_path, dataset, tokenizer):
    rows = data.read_split_csv(dataset["train"])
    twin = rows[0].__class__(**{**rows[0].__dict__, "item_id": 5, "item_sid": "<a_0><b_1><c_1>"})
    path = tmp_path / "twins.csv"
    data.write_split_csv([rows[0], twin], path)
    ds = data.SidDataset(train_file=path, tokenizer=tokenizer, max_len=512, category="Toy_Store")
    assert ds[0]["prompt"] == ds[1]["prompt"]
    assert [ds[0]["target_sid"], ds[1]["target_sid"]] == [rows[0].item_sid, "<a_0><b_1><c_1>"]
    assert [ds[0]["target_item_id"], ds[1]["target_item_id"]] == [rows[0].item_id, 5]


def test_truncation_keeps_response_and_cuts_oldest_history(dataset, caplog):
    tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(dataset["index"]))
    full = data.SidSFTDataset(train_file=dataset["train"], tokenizer=tok, max_len=1024, category="Toy_Store")
    longest = max(len(x["input_ids"]) for x in full.items)
    with caplog.at_level(logging.INFO):
        cut = data.SidSFTDataset(train_file=dataset["train"], tokenizer=tok, max_len=longest - 1, category="Toy_Store")
    assert all(len(x["input_ids"]) <= longest - 1 for x in cut.items)
    messages = [r.getMessage() for r in caplog.records if "shortened" in r.getMessage()]
    assert len(messages) == 1
    for a, b in zip(full.items, cut.items):
        assert a["labels"][-8:] == b["labels"][-8:]  # the response is whole
    i = max(range(len(full.items)), key=lambda j: len(full.items[j]["input_ids"]))
    oldest = full.examples[i].history[0]
    n_prompt = cut.items[i]["labels"].count(-100)
    assert oldest not in tok.decode(cut.items[i]["input_ids"][:n_prompt])
    assert full.examples[i].history[-1] in tok.decode(cut.items[i]["input_ids"][:n_prompt])
    with pytest.raises(ValueError, match="raise max_len"):
        data.SidSFTDataset(train_file=dataset["train"], tokenizer=tok, max_len=40, category="Toy_Store")


def test_long_item_descriptions_are_cut_to_fit(tmp_path, dataset):
    """Item tasks have no history to drop: a description longer than the budget is cut at its end
    (Office has descriptions of thousands of tokens), for SFT and for RL prompts alike."""
    tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(dataset["index"]))
    meta = json.loads(open(dataset["item"]).read())
    long_item = next(iter(meta))
    meta[long_item]["description"] = " ".join(f"word{i}" for i in range(600))
    item_file = tmp_path / "item.json"
    item_file.write_text(json.dumps(meta))
    common = dict(item_file=str(item_file), index_file=dataset["index"], tokenizer=tok, category="Toy_Store")
    rl_prompts = data.RLTitle2SidDataset(max_len=200, **common)
    sft_rows = data.SidItemFeatDataset(max_len=200, **common)
    assert max(len(tok(x["prompt"], add_special_tokens=False)["input_ids"]) for x in rl_prompts.items) <= 200 - 4
    assert max(len(x["input_ids"]) for x in sft_rows.items) <= 200
    cut = next(x["prompt"] for x in rl_prompts.items if "word0 " in x["prompt"])
    assert "word599" not in cut and cut.endswith("### Response:\n")
    with pytest.raises(ValueError, match="no item text left"):
        data.RLTitle2SidDataset(max_len=20, **common)
    meta[long_item]["title"] = "Long " + meta[long_item]["description"]  # an answer cannot be cut
    item_file.write_text(json.dumps(meta))
    with pytest.raises(data.InputError, match="sid_to_title answer .* leaves no room for its prompt"):
        data.SidItemFeatDataset(max_len=200, **common)


def test_sample_seed_and_dedup(tmp_path, dataset, tokenizer):
    a = data.SidSFTDataset(train_file=dataset["train"], tokenizer=tokenizer, max_len=512, sample=10, seed=3)
    b = data.SidSFTDataset(train_file=dataset["train"], tokenizer=tokenizer, max_len=512, sample=10, seed=3)
    c = data.SidSFTDataset(train_file=dataset["train"], tokenizer=tokenizer, max_len=512, sample=10, seed=4)
    assert len(a) == 10 and a.items == b.items and a.items != c.items
    rows = data.read_split_csv(dataset["train"])
    repeat = rows[0].__class__(**{**rows[0].__dict__, "item_id": rows[0].history_item_id[-1],
                                  "item_sid": rows[0].history_item_sid[-1]})
    path = tmp_path / "repeat.csv"
    data.write_split_csv([rows[0], repeat], path)
    assert len(data.SidSFTDataset(train_file=path, tokenizer=tokenizer, max_len=512, dedup=True)) == 1
    assert len(data.SidSFTDataset(train_file=path, tokenizer=tokenizer, max_len=512)) == 2


def test_missing_sid_tokens_is_a_clear_error(dataset):
    plain = tiny.make_tokenizer("gpt2_bpe")
    with pytest.raises(ValueError, match="SID tokens of the index are not in the tokenizer"):
        data.require_sid_tokens(plain, data.read_index(dataset["index"]))


@pytest.mark.skipif(not tiny.SHARED_OFFICE.is_dir(), reason="../shared/data/Office_Products is absent")
def test_office_files_round_trip():
    office = tiny.SHARED_OFFICE
    index = data.read_index(office / "index.json")
    meta = data.read_item_meta(office / "item.json")
    info = data.read_info(office / "info.txt")
    assert len(info) == len(index) == 3459
    assert {sid for sid, _, _ in info} <= {data.sid_string(t) for t in index.values()}
    rows = data.read_split_csv(office / "test.csv", index=index, item_meta=meta)
    assert len(rows) == 4866 and all(1 <= len(r.history_item_id) <= 10 for r in rows)
    tok = tiny.make_tokenizer("gpt2_bpe")
    data.add_sid_tokens(tok, index)
    ds = data.SidSFTDataset(train_file=office / "test.csv", tokenizer=tok, max_len=2048, sample=50,
                            category=data.category_phrase("Office_Products"), prompt_style="unified")
    for item, ex in zip(ds.items, ds.examples):
        n = item["labels"].count(-100)
        assert tok.decode(item["labels"][n:-1]) == ex.target_sid + "\n"
        assert "office products" in ex.prompt()


# --- encodings, the catalogue, styles and the original's calls -----------------------------------


def test_bom_is_accepted_and_non_utf8_is_named(tmp_path, dataset):
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + dataset["train"].read_bytes())
    assert data.read_split_csv(bom) == data.read_split_csv(dataset["train"])
    index_bom = tmp_path / "index.json"
    index_bom.write_bytes(b"\xef\xbb\xbf" + dataset["index"].read_bytes())
    assert data.read_index(index_bom) == data.read_index(dataset["index"])
    latin = tmp_path / "latin.csv"
    text = dataset["train"].read_text()
    latin.write_bytes(text.replace("Item number 3", "Caf\u00e9 number 3", 1).encode("latin-1"))
    offset = text.encode("utf-8").index(b"Item number 3") + 3
    with pytest.raises(data.DataFormatError, match=rf"latin.csv: not UTF-8 \(byte 0xe9 at offset {offset}\); "
                                                   r"save it as UTF-8"):
        data.read_split_csv(latin)


def test_empty_selection_is_an_input_error_naming_the_dataset(dataset, tokenizer, tmp_path):
    with pytest.raises(data.InputError, match="SidSFTDataset: sample=0 selects no rows"):
        data.SidSFTDataset(str(dataset["train"]), tokenizer, 512, sample=0)
    with pytest.raises(data.InputError, match="RLTitle2SidDataset: sample=0 selects no rows"):
        data.RLTitle2SidDataset(str(dataset["item"]), str(dataset["index"]), sample=0)
    rows = data.read_split_csv(dataset["train"])
    repeat = rows[0].__class__(**{**rows[0].__dict__, "item_id": rows[0].history_item_id[-1],
                                  "item_sid": rows[0].history_item_sid[-1]})
    only_repeats = tmp_path / "repeats.csv"
    data.write_split_csv([repeat], only_repeats)
    with pytest.raises(data.InputError, match="SidDataset: no rows left"):
        data.SidDataset(str(only_repeats), dedup=True)


def _twisted_split(tmp_path, dataset):
    """The train split with its second row's item_sid replaced by another item's SID."""
    rows = data.read_split_csv(dataset["train"])
    other = next(r.item_sid for r in rows if r.item_sid != rows[1].item_sid)
    path = tmp_path / "twisted.csv"
    data.write_split_csv([rows[0], rows[1].__class__(**{**rows[1].__dict__, "item_sid": other})] + rows[2:], path)
    return path, len(rows)


def test_catalogue_cross_checks_each_split_once(tmp_path, dataset, monkeypatch, caplog):
    path, n = _twisted_split(tmp_path, dataset)
    catalogue = data.Catalogue(dataset["index"], dataset["item"], category="Toy_Store")
    assert catalogue.category == "toy store items"
    with pytest.raises(data.InputError, match=rf"twisted.csv: 1 of {n} rows have a target the catalogue cannot "
                                              r"produce \(first at line 3: item_sid .* is not the SID of item .*"
                                              r"--allow_unreachable_targets True"):
        catalogue.split(path)
    lenient = data.Catalogue(dataset["index"], dataset["item"], allow_unreachable_targets=True)
    with caplog.at_level(logging.WARNING):
        assert len(lenient.split(path)) == n
    assert lenient.unreachable == {str(path): 1}
    assert any("1 of" in r.getMessage() and "count as misses" in r.getMessage() for r in caplog.records)

    reads = []
    real_read = data.read_split_csv
    monkeypatch.setattr(data, "read_split_csv", lambda *a, **k: reads.append(a[0]) or real_read(*a, **k))
    good = data.Catalogue(dataset["index"], dataset["item"])
    tok = tiny.tokenizer_with_sids("gpt2_bpe", good.index)
    common = dict(train_file=str(dataset["train"]), tokenizer=tok, catalogue=good)
    with_catalogue = [data.SidSFTDataset(**common), data.SFTData(**common),
                      data.FusionSeqRecDataset(item_file=None, index_file=None, **common)]
    assert len(reads) == 1  # one read of the split for all three datasets
    by_paths = data.FusionSeqRecDataset(str(dataset["train"]), str(dataset["item"]), str(dataset["index"]), tok)
    assert with_catalogue[2].inputs == by_paths.inputs


def test_targets_missing_from_the_catalogue_are_errors_not_unknown_items(tmp_path, dataset):
    rows = data.read_split_csv(dataset["train"])
    meta = json.loads(dataset["item"].read_text())
    del meta[str(rows[2].item_id)]
    item_file = tmp_path / "item.json"
    item_file.write_text(json.dumps(meta))
    with pytest.raises(data.DataFormatError, match=rf"train.csv, line 4, field 'item_id': item {rows[2].item_id} "
                                                   r"has no title in the catalogue"):
        data.RLSidhis2TitleDataset(str(dataset["train"]), str(item_file), str(dataset["index"]))
    index = json.loads(dataset["index"].read_text())
    del index[str(rows[2].item_id)]
    index_file = tmp_path / "index.json"
    index_file.write_text(json.dumps(index))
    tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(dataset["index"]))
    with pytest.raises(data.DataFormatError, match=rf"line 4, field 'item_id': item {rows[2].item_id} has no SID"):
        data.TitleHistory2SidSFTDataset(str(dataset["train"]), str(dataset["item"]), str(index_file), tok)


def test_unified_style_words_every_stage_alike(dataset):
    tok = tiny.tokenizer_with_sids("gpt2_bpe", data.read_index(dataset["index"]))
    train, phrase = str(dataset["train"]), data.category_phrase("Toy_Store")
    upstream = data.EvalSidDataset(train, tok, 2560, test=True, category=phrase)
    unified = data.EvalSidDataset(train, tok, 2560, test=True, category=phrase, prompt_style="unified")
    rl = data.SidDataset(train, category=phrase, prompt_style="unified")
    assert "given the following chronological interaction history" in upstream[0]["prompt"]
    assert unified[0]["prompt"] == rl[0]["prompt"] and "toy store items in chronological order" in rl[0]["prompt"]
    assert unified[0]["prompt"].startswith("Below is an instruction") and unified[0]["prompt"].endswith("### Response:\n")
    with pytest.raises(data.InputError, match="prompt_style 'fancy'"):
        data.SidDataset(train, prompt_style="fancy")


def test_rl_rows_carry_their_own_target_and_the_originals_lookups(dataset):
    rows = data.read_split_csv(dataset["train"])
    seq = data.RLSeqTitle2SidDataset(str(dataset["train"]), category="toy store items")
    first = seq[0]
    assert first["completion"] == rows[0].item_sid + "\n" and first["task"] == "title_history_to_sid"
    assert (first["target_sid"], first["target_item_id"], first["history_item_ids"]) == (
        rows[0].item_sid, rows[0].item_id, list(rows[0].history_item_id))
    assert seq.prompt2history[first["prompt"]] == "::".join(rows[0].history_item_title)
    assert seq.history2target["::".join(rows[0].history_item_title)] is not None
    items = data.RLTitle2SidDataset(str(dataset["item"]), str(dataset["index"]))
    titles = [x for x in items if x["task"] == "title_to_sid"]
    descriptions = [x for x in items if x["task"] == "description_to_sid"]
    # the original's dicts: 12 distinct titles, 3 distinct descriptions (each kept at its first
    # position, with the SID of its last item)
    assert len(titles) == 12 and len(descriptions) == 3 and all(x["history_item_ids"] == [] for x in items)
    index = data.read_index(dataset["index"])
    assert descriptions[0]["target_sid"] == data.sid_string(index["9"]) and descriptions[0]["target_item_id"] == 9
    assert descriptions[0]["completion"] == descriptions[0]["target_sid"] + "\n"
