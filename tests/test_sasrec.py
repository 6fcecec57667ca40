"""sasrec.py: the sequential baselines learn a rule, round-trip through checkpoints, handle padding
and variable lengths, reproduce with a seed, and reject item ids outside the catalogue clearly."""

import json

import pytest
import torch

import data
import sasrec
from runtime import InputError
from tests import tiny

N_ITEMS = 12
ARCHITECTURES = {  # small, non-default sizes: a checkpoint must not rely on defaults
    "SASRec": dict(num_heads=2, num_blocks=2),
    "GRU4Rec": dict(gru_layers=2),
    "Caser": dict(num_filters=4, filter_sizes=[1, 3]),
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Split CSVs where the next item is always (last + 1) % N_ITEMS."""
    return tiny.write_dataset(tmp_path_factory.mktemp("toy"), n_items=N_ITEMS, n_users=100, seq_len=8)


def cli_args(toy, out_dir, *extra):
    return [
        "--train_file", str(toy["train"]), "--valid_file", str(toy["valid"]),
        "--test_file", str(toy["test"]), "--result_json_path", str(out_dir / "result.json"),
        "--hidden_factor", "32", "--batch_size", "32", "--lr", "0.01", "--dropout_rate", "0.1",
        "--early_stop", "5", *extra,
    ]


def make_model(name, seed=0, item_num=N_ITEMS, state_size=7):
    torch.manual_seed(seed)
    return sasrec.MODELS[name](item_num, hidden_size=24, state_size=state_size, dropout_rate=0.2,
                               **ARCHITECTURES[name])


@pytest.mark.parametrize("model", list(sasrec.MODELS))
def test_cli_learns_deterministic_next_item_rule(toy, tmp_path, model):
    results = sasrec.main(cli_args(toy, tmp_path, "--model", model, "--epoch", "80"))

    assert results["test"]["HR@1"] > 0.95
    assert results["test"]["NDCG@10"] > results["popularity_test"]["NDCG@10"]
    assert results["ks"] == [1, 3, 5, 10]  # K above the catalogue size is left out
    assert results["epochs_run"] < 80  # early stopping fired once valid stopped improving
    assert json.loads((tmp_path / "result.json").read_text()) == json.loads(json.dumps(results))
    # the saved checkpoint is the evaluated (best) model
    reloaded = sasrec.load_sasrec_checkpoint(tmp_path / "result.pt")
    test = sasrec.load_sequences(toy["test"], reloaded.item_num, reloaded.state_size)
    assert sasrec.evaluate(reloaded, test, results["ks"]) == results["test"]


@pytest.mark.parametrize("model", list(sasrec.MODELS))
def test_checkpoint_round_trip_gives_identical_scores(tmp_path, model):
    original = make_model(model, seed=1).eval()
    states, len_states = original.states_from_histories([[1], [2, 3, 4], [5, 6, 7, 8, 9, 10, 11]])
    sasrec.save_checkpoint(original, tmp_path / "model.pt", training={"best_epoch": 3})

    torch.manual_seed(2)  # a different init: only loaded weights can give the same scores
    reloaded = sasrec.load_sasrec_checkpoint(tmp_path / "model.pt")

    assert type(reloaded) is type(original) and not reloaded.training
    assert reloaded.hyper_parameters == original.hyper_parameters
    assert (reloaded.state_size, reloaded.hidden_size, reloaded.pad_id) == (7, 24, N_ITEMS)
    assert torch.equal(reloaded.forward_eval(states, len_states), original.forward_eval(states, len_states))


def test_load_rejects_a_file_without_hyper_parameters(tmp_path):
    torch.save(make_model("SASRec").state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="no hyper-parameters"):
        sasrec.load_sasrec_checkpoint(tmp_path / "bare.pt")


def test_pad_histories_right_pads_and_keeps_most_recent_items():
    states, len_states = sasrec.pad_histories([(4,), (1, 2, 3), tuple(range(6))], state_size=4, pad_id=9)
    assert states.tolist() == [[4, 9, 9, 9], [1, 2, 3, 9], [2, 3, 4, 5]]
    assert len_states.tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match="empty"):
        sasrec.pad_histories([(1,), ()], state_size=4, pad_id=9)


@pytest.mark.parametrize("model", list(sasrec.MODELS))
def test_forward_eval_handles_padding_and_variable_lengths(model):
    net = make_model(model).eval()
    histories = [list(range(n)) for n in range(1, 10)]  # lengths 1..9, state_size 7
    states, len_states = net.states_from_histories(histories)
    scores = net.forward_eval(states, len_states)

    assert states.shape == (9, 7) and scores.shape == (9, N_ITEMS)
    assert torch.isfinite(scores).all()
    assert len_states.tolist() == [1, 2, 3, 4, 5, 6, 7, 7, 7]
    for i, n in enumerate(len_states.tolist()):
        # a row scored alone, at its exact width, scores as it does in the padded batch
        alone = net.forward_eval(states[i:i + 1, :n], len_states[i:i + 1])
        torch.testing.assert_close(alone[0], scores[i])
    # positions past len_states are ignored, whatever they hold
    garbage = torch.where(states == net.pad_id, torch.randint_like(states, N_ITEMS), states)
    torch.testing.assert_close(net.forward_eval(garbage, len_states), scores)
    # too-long histories keep their most recent items
    most_recent = net.states_from_histories([histories[8][-7:]])
    torch.testing.assert_close(scores[8], net.forward_eval(*most_recent)[0])

    with pytest.raises(ValueError, match="state_size"):
        net.forward_eval(torch.zeros(1, 8, dtype=torch.long), torch.tensor([8]))
    with pytest.raises(ValueError, match="len_states"):
        net.forward_eval(states[:1], torch.tensor([0]))


@pytest.mark.parametrize("field", ["item_id", "history_item_id"])
def test_test_item_outside_training_catalogue_fails_clearly(toy, tmp_path, field):
    rows = data.read_split_csv(toy["test"])
    bad = dict(rows[1].__dict__)  # the row on line 3 of the file
    bad[field] = N_ITEMS if field == "item_id" else (*bad[field][:-1], N_ITEMS)
    test_file = tmp_path / "test_bad.csv"
    data.write_split_csv([rows[0], bad] + rows[2:], test_file)

    argv = cli_args(toy, tmp_path, "--epoch", "1")
    argv[argv.index(str(toy["test"]))] = str(test_file)
    with pytest.raises(data.DataFormatError) as err:
        sasrec.main(argv + ["--index_file", str(toy["index"])])
    assert (err.value.path, err.value.line, err.value.field) == (str(test_file), 3, field)
    assert f"item id {N_ITEMS} is outside the training catalogue of {N_ITEMS} items" in str(err.value)
    # the same file fails the same way with an explicit catalogue size
    with pytest.raises(data.DataFormatError, match="line 3"):
        sasrec.main(argv + ["--item_num", str(N_ITEMS)])


def test_seed_reproduces_training(toy, tmp_path):
    def run(out):
        out.mkdir()
        results = sasrec.main(cli_args(toy, out, "--epoch", "3", "--seed", "7", "--loss_type", "bce"))
        return results, sasrec.load_sasrec_checkpoint(out / "result.pt").state_dict()

    (first, first_weights), (second, second_weights) = run(tmp_path / "a"), run(tmp_path / "b")
    assert first["history"] == second["history"] and first["test"] == second["test"]
    assert all(torch.equal(first_weights[k], second_weights[k]) for k in first_weights)


def test_losses_reward_scoring_the_target_highest():
    targets = torch.tensor([0, 3])
    right, wrong = torch.full((2, 5), -5.0), torch.full((2, 5), 5.0)
    right[[0, 1], targets], wrong[[0, 1], targets] = 5.0, -5.0
    generator = torch.Generator().manual_seed(0)
    for loss_type in ("ce", "bce"):
        assert sasrec.next_item_loss(right, targets, loss_type, generator) < 0.01
        assert sasrec.next_item_loss(wrong, targets, loss_type, generator) > 5


def test_popularity_ranks_by_training_frequency_with_ties_by_item_id():
    popularity = sasrec.Popularity(torch.tensor([2, 2, 1, 1, 0, 3, 3, 3]), item_num=5)
    states, len_states = torch.zeros(2, 1, dtype=torch.long), torch.ones(2, dtype=torch.long)
    scores = popularity.forward_eval(states, len_states)
    assert scores.shape == (2, 5)
    assert torch.argsort(scores[0], descending=True).tolist() == [3, 1, 2, 0, 4]
    tests = sasrec.Sequences(states, len_states, targets=torch.tensor([3, 2]))
    metrics = sasrec.evaluate(popularity, tests, ks=[1, 3])
    assert metrics["HR@1"] == 0.5 and metrics["HR@3"] == 1.0


@pytest.mark.skipif(not tiny.SHARED_OFFICE.is_dir(),
                    reason=f"real Office_Products split not available at {tiny.SHARED_OFFICE}")
def test_office_products_split_loads_and_popularity_is_a_nontrivial_floor():
    splits = {s: data.read_split_csv(tiny.SHARED_OFFICE / f"{s}.csv") for s in ("train", "test")}
    assert sasrec.catalogue_size(splits.values(), index_file=tiny.SHARED_OFFICE / "index.json") == 3459
    train = sasrec.sequences_from_rows(splits["train"], "train.csv", 3459, 10)
    test = sasrec.sequences_from_rows(splits["test"], "test.csv", 3459, 10)
    metrics = sasrec.evaluate(sasrec.Popularity(train.targets, 3459), test, ks=[10, 50])
    assert 0.01 < metrics["HR@10"] < metrics["HR@50"] < 0.5


class OriginalSASRec(torch.nn.Module):
    """The original MiniOneRec SASRec's parameters (names, shapes, Conv1d feed-forward) and its
    computation written out plainly: embeddings + positions, padding rows zeroed, keys whose
    vectors sum to zero masked, causal softmax scaled by sqrt(hidden), residual on the layer-normed
    queries, Conv1d feed-forward, the raw logits of the output layer at position len - 1."""

    def __init__(self, hidden, item_num, state_size):
        super().__init__()
        nn = torch.nn
        self.item_num, self.hidden = item_num, hidden
        self.item_embeddings = nn.Embedding(item_num + 1, hidden)
        self.positional_embeddings = nn.Embedding(state_size, hidden)
        self.ln_1, self.ln_2, self.ln_3 = nn.LayerNorm(hidden), nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.mh_attn = nn.Module()
        for name in ("linear_q", "linear_k", "linear_v"):
            setattr(self.mh_attn, name, nn.Linear(hidden, hidden))
        self.feed_forward = nn.Module()
        self.feed_forward.w_1 = nn.Conv1d(hidden, hidden, 1)
        self.feed_forward.w_2 = nn.Conv1d(hidden, hidden, 1)
        self.feed_forward.layer_norm = nn.LayerNorm(hidden)
        self.s_fc = nn.Linear(hidden, item_num)
        for p in self.parameters():  # away from the default init, so a mis-mapped weight shows
            torch.nn.init.normal_(p, 0, 0.5)

    def forward_eval(self, states, len_states):
        seq = self.item_embeddings(states) + self.positional_embeddings(torch.arange(states.shape[1]))
        seq = seq * (states != self.item_num).float()[..., None]
        queries = self.ln_1(seq)
        q, k, v = self.mh_attn.linear_q(queries), self.mh_attn.linear_k(seq), self.mh_attn.linear_v(seq)
        scores = q @ k.transpose(1, 2) / self.hidden ** 0.5
        key_is_padding = (seq.sum(-1) == 0)[:, None, :]
        causal = torch.ones(states.shape[1], states.shape[1]).tril() == 0
        scores = scores.masked_fill(key_is_padding | causal, -2 ** 32 + 1)
        attended = scores.softmax(-1) @ v + queries
        ff_in = self.ln_2(attended)
        ff = self.feed_forward.w_2(torch.relu(self.feed_forward.w_1(ff_in.transpose(1, 2)))).transpose(1, 2)
        ff = self.feed_forward.layer_norm(ff + ff_in) * (states != self.item_num).float()[..., None]
        hidden = self.ln_3(ff)[torch.arange(states.shape[0]), len_states - 1]
        return self.s_fc(hidden)


def test_original_sasrec_state_dict_loads_and_scores_like_the_original(tmp_path):
    torch.manual_seed(0)
    original = OriginalSASRec(hidden=32, item_num=N_ITEMS, state_size=10).eval()
    torch.save(original.state_dict(), tmp_path / "original_state.pth")

    loaded = sasrec.load_sasrec_checkpoint(tmp_path / "original_state.pth")

    assert type(loaded) is sasrec.SASRec and not loaded.training
    assert (loaded.item_num, loaded.hidden_size, loaded.state_size, loaded.pad_id) == (N_ITEMS, 32, 10, N_ITEMS)
    histories = [[3], [1, 2, 3, 4], list(range(11))]
    states, len_states = loaded.states_from_histories(histories)
    assert states[0, 1:].eq(N_ITEMS).all()  # right padding with item_num, as the original
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_eval(states, len_states),
                                   original.forward_eval(states, len_states), atol=1e-5, rtol=1e-5)


def test_load_rejects_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    with pytest.raises(InputError, match="not a SASRec checkpoint") as raised:
        sasrec.load_sasrec_checkpoint(tmp_path / "notes.txt")
    assert "weights_only" not in str(raised.value)
    torch.save({"model": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="nor an original MiniOneRec SASRec"):
        sasrec.load_sasrec_checkpoint(tmp_path / "other.pt")
    state = OriginalSASRec(hidden=8, item_num=5, state_size=10).state_dict()
    state["s_fc.weight"] = state["s_fc.weight"][:, :4]
    torch.save(state, tmp_path / "bad_shapes.pth")
    with pytest.raises(InputError, match="unexpected shapes"):
        sasrec.load_sasrec_checkpoint(tmp_path / "bad_shapes.pth")


UPSTREAM = tiny.REPO.parent / "shared" / "upstream"


def upstream_sasrec_class():
    """The original's SASRec class, executed from its own source: the class statement of its
    sasrec.py (whose module imports wandb and its utility script) over its SASRecModules_ori.py."""
    import ast
    import importlib.util

    spec = importlib.util.spec_from_file_location("upstream_sasrec_modules", UPSTREAM / "SASRecModules_ori.py")
    modules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(modules)
    source = (UPSTREAM / "sasrec.py").read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "SASRec")
    namespace = {"torch": torch, "nn": torch.nn, **vars(modules)}
    exec(compile(ast.Module([node], []), str(UPSTREAM / "sasrec.py"), "exec"), namespace)
    return namespace["SASRec"]


@pytest.mark.skipif(not (UPSTREAM / "sasrec.py").is_file(), reason=f"the original sasrec.py is not at {UPSTREAM}")
def test_a_state_dict_of_the_original_code_scores_identically(tmp_path):
    torch.manual_seed(3)
    original = upstream_sasrec_class()(32, N_ITEMS, 10, 0.3, "cpu").eval()  # as the original rl.py builds it
    for p in original.parameters():
        torch.nn.init.normal_(p, 0, 0.5)
    torch.save(original.state_dict(), tmp_path / "best_state.pth")

    loaded = sasrec.load_sasrec_checkpoint(tmp_path / "best_state.pth")

    states, len_states = loaded.states_from_histories([[3], [1, 2, 3, 4], list(range(10))])
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_eval(states, len_states),
                                   original.forward_eval(states, len_states), atol=1e-5, rtol=1e-5)
