"""Build collision-free semantic IDs for a catalogue: item.json -> index.json + info.txt.

Steps: item text -> embeddings (rq/embeddings.py; skipped with --embeddings_path) -> quantiser ->
the method's collision repair -> an extra level for what still collides (rq/sids.py). Methods, each
as the original's rq/ scripts run it:
  rqkmeans              faiss residual k-means (rqkmeans_faiss.py); the original leaves collisions,
                        here colliding items move to a free last-level code first
  rqkmeans_constrained  balanced residual k-means with k-means-constrained
                        (rqkmeans_constrained.py); colliding items get the extra level
  rqvae                 RQ-VAE (rqvae.py) and the Sinkhorn re-assignment of generate_indices.py
  rqkmeans_plus         RQ-KMeans+ (rqkmeans_plus.py): an RQ-VAE with a residual encoder started
                        from the balanced RQ-KMeans codebooks; colliding items get the extra level
Writes into --output_dir:
  index.json       item id -> ["<a_12>", "<b_3>", "<c_40>"(, "<d_0>")]
  info.txt         SID<TAB>title<TAB>item_id per item
  sid_report.json  collisions before repair, items moved, extra levels, codes used and perplexity
                   per level, largest group per prefix depth, mean cosine of items sharing a first
                   code vs all pairs, wall time per step
  (the three become visible together: rq/sid_files.py)
  item_emb.npy     the item embeddings (row i = i-th item of item.json), unless --embeddings_path

    python rq/build_sids.py --item_meta_path DIR/item.json --output_dir DIR [--method rqvae]
Then convert_dataset.py --data_dir DIR writes the split CSVs.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

# cores are often shared (CI, laptops, other jobs): busy-waiting OpenMP threads then stall every op
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import data  # noqa: E402
from rq import embeddings as text_embeddings  # noqa: E402
from rq import rqkmeans, rqvae, sid_files, sids  # noqa: E402
from runtime import ArgumentParser, InputError, positive_int, run_main  # noqa: E402

logger = logging.getLogger("build_sids")

METHODS = ("rqkmeans", "rqkmeans_constrained", "rqvae", "rqkmeans_plus")
# the original scripts' seeds and learning rates
DEFAULT_SEED = {"rqkmeans": 0, "rqkmeans_constrained": 42, "rqvae": 2024, "rqkmeans_plus": 2024}
DEFAULT_LR = {"rqvae": 1e-3, "rqkmeans_plus": 1e-4}
# the original trains 5000-10000 epochs on a GPU and measures collisions every 50; these are
# CPU-sized defaults (benchmarks/results/bench_sids.json has the epochs/s)
DEFAULT_EPOCHS = 20
DEFAULT_EVAL_STEP = 5


def codebook_sizes_for(n_items: int, num_levels: int, codebook_size: list[int] | None) -> list[int]:
    """One size per level: given explicitly (one number, or one per level) or the default for the
    catalogue size."""
    if num_levels < 1:
        raise InputError(f"--num_levels must be at least 1, got {num_levels}")
    if not codebook_size:
        return [sids.default_codebook_size(n_items)] * num_levels
    if len(codebook_size) == 1:
        return list(codebook_size) * num_levels
    if len(codebook_size) != num_levels:
        raise InputError(f"--codebook_size: {len(codebook_size)} sizes for {num_levels} levels (--num_levels)")
    return list(codebook_size)


def read_embeddings(path, n_items: int, item_meta_path) -> np.ndarray:
    embeddings = text_embeddings.load_embeddings(path)
    if len(embeddings) != n_items:
        raise InputError(f"--embeddings_path {path}: {len(embeddings)} rows, but {item_meta_path} has {n_items} "
                         f"items (row i must embed the i-th item of item.json)")
    return embeddings


def standardise(embeddings: np.ndarray) -> np.ndarray:
    """Centred and divided by one overall standard deviation. The original trains on large-norm
    Qwen hidden states; unit-norm encoder outputs have values near 1/sqrt(d), so the optimiser's
    first steps move the latents farther than the k-means-initialised codebooks reach and the
    codes collapse. One shift and one scale leave k-means assignments unchanged."""
    return ((embeddings - embeddings.mean(0)) / max(float(embeddings.std()), 1e-12)).astype(np.float32)


def train_rqvae_codes(embeddings, sizes, *, residual_encoder, codebooks=None, epochs, lr, train_batch_size,
                      layers, e_dim, eval_step, warmup_epochs, seed):
    """(trained RQ-VAE / RQ-KMeans+ model, raw codes, last-level distances, stats); `embeddings`
    already standardised."""
    config = rqvae.RQVAEConfig(in_dim=embeddings.shape[1], num_emb_list=list(sizes),
                               e_dim=embeddings.shape[1] if residual_encoder else e_dim, layers=list(layers),
                               kmeans_init=not residual_encoder, sk_epsilons=[0.0] * len(sizes),
                               residual_encoder=residual_encoder)
    training = rqvae.TrainingConfig(epochs=epochs, batch_size=train_batch_size, lr=lr, eval_step=eval_step,
                                    warmup_epochs=warmup_epochs, seed=seed)
    torch.manual_seed(seed)
    model = rqvae.RQVAE(config)
    if codebooks is not None:
        model.load_codebooks(codebooks)
    x = torch.as_tensor(embeddings)
    result = rqvae.train(model, x, training)
    raw_codes, last_distances = rqvae.last_level_distances(model, x)
    stats = {"epochs": epochs, "epochs_per_s": round(result.epochs_per_s, 3),
             "best_collision_rate": result.best_collision_rate, "best_collision_epoch": result.best_collision_epoch,
             "final_recon_loss": result.final_recon_loss}
    return model, raw_codes, last_distances, stats


def quantise(method, embeddings, sizes, *, seed, kmeans_niter, kmeans_max_iter, epochs, lr, train_batch_size,
             layers, e_dim, eval_step, warmup_epochs) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(raw codes, codes after the method's repair, method stats, timings)."""
    timings, stats = {}, {}
    started = time.perf_counter()
    vae_args = dict(epochs=epochs, lr=lr, train_batch_size=train_batch_size, layers=layers, e_dim=e_dim,
                    eval_step=eval_step, warmup_epochs=warmup_epochs, seed=seed)
    if method == "rqkmeans":
        raw_codes, _, last_distances = rqkmeans.residual_kmeans(embeddings, sizes, kmeans_niter, seed)
    elif method == "rqkmeans_constrained":
        raw_codes, _, _ = rqkmeans.residual_kmeans_constrained(embeddings, sizes, kmeans_max_iter, seed)
    elif method == "rqvae":
        model, raw_codes, last_distances, stats = train_rqvae_codes(standardise(embeddings), sizes,
                                                                    residual_encoder=False, **vae_args)
    else:
        scaled = standardise(embeddings)
        _, codebooks, _ = rqkmeans.residual_kmeans_constrained(scaled, sizes, kmeans_max_iter,
                                                               DEFAULT_SEED["rqkmeans_constrained"])
        timings["constrained_init_s"] = time.perf_counter() - started
        _, raw_codes, _, stats = train_rqvae_codes(scaled, sizes, residual_encoder=True, codebooks=codebooks,
                                                   **vae_args)
    timings["quantise_s"] = time.perf_counter() - started

    started = time.perf_counter()
    if method == "rqkmeans":
        codes = sids.reassign_last_level(raw_codes, last_distances)
        stats["repair"] = "move to the nearest free last-level code"
    elif method == "rqvae":
        last_layer = model.rq.vq_layers[-1]
        codes, rounds = rqvae.sinkhorn_repair(raw_codes, last_distances, last_layer.sk_epsilon or rqvae.REPAIR_EPSILON,
                                              last_layer.sk_iters)
        stats.update(repair="Sinkhorn re-assignment of the last level (generate_indices.py)", repair_rounds=rounds)
    else:
        codes = raw_codes
        stats["repair"] = "none before the extra level (as the original)"
    timings["repair_s"] = time.perf_counter() - started
    return raw_codes, codes, stats, timings


def build_sids(item_meta_path, output_dir, method="rqkmeans", num_levels=3, codebook_size=None,
               embeddings_path=None, encoder_path=None, pooling="mean", normalize=False, batch_size=64,
               max_length=256, dtype="auto", seed=None, kmeans_niter=25, kmeans_max_iter=100,
               epochs=DEFAULT_EPOCHS, lr=None, train_batch_size=2048, layers=(2048, 1024, 512, 256, 128, 64),
               e_dim=32, eval_step=DEFAULT_EVAL_STEP, warmup_epochs=50) -> dict:
    """Run the whole step; returns the report it also writes to sid_report.json."""
    if method not in METHODS:
        raise InputError(f"--method {method!r}: choose one of {METHODS}")
    output_dir = Path(output_dir)
    seed = DEFAULT_SEED[method] if seed is None else seed
    started = time.perf_counter()
    item_meta = data.read_item_meta(item_meta_path)
    item_ids, texts = text_embeddings.item_texts(item_meta)
    sizes = codebook_sizes_for(len(item_ids), num_levels, codebook_size)
    if max(sizes) > len(item_ids):
        raise InputError(f"--codebook_size {max(sizes)} is larger than the {len(item_ids)} items of {item_meta_path}: "
                         f"k-means cannot fill more codes than items; pass a smaller --codebook_size")

    if embeddings_path:
        embeddings = read_embeddings(embeddings_path, len(item_ids), item_meta_path)
    else:
        embeddings = text_embeddings.encode_texts(texts, encoder_path, pooling, normalize, batch_size, max_length, dtype)
        text_embeddings.save_embeddings(embeddings, output_dir / "item_emb.npy")
    timings = {"embeddings_s": time.perf_counter() - started}

    raw_codes, codes, method_stats, quantise_timings = quantise(
        method, embeddings, sizes, seed=seed, kmeans_niter=kmeans_niter, kmeans_max_iter=kmeans_max_iter,
        epochs=epochs, lr=DEFAULT_LR.get(method, 0.0) if lr is None else lr, train_batch_size=train_batch_size,
        layers=layers, e_dim=e_dim, eval_step=eval_step, warmup_epochs=warmup_epochs)
    timings.update(quantise_timings)
    suffixes = sids.collision_suffixes(codes)
    index = sids.build_index(item_ids, codes, suffixes)
    timings["total_s"] = time.perf_counter() - started

    report = {"method": method, "seed": seed,
              **sids.sid_report(embeddings, raw_codes, codes, suffixes, index, sizes),
              **method_stats, **{k: round(v, 2) for k, v in timings.items()}}
    sid_files.write_together(output_dir, {
        "index.json": lambda path: data.write_index(index, path),
        "info.txt": lambda path: data.write_info(index, item_meta, path),
        "sid_report.json": lambda path: data.write_json(report, path, indent=2),
    })
    logger.info("SIDs for %d items in %s: %s", len(index), output_dir, report)
    return report


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--item_meta_path", required=True, help="item.json of the catalogue")
    parser.add_argument("--output_dir", required=True,
                        help="folder for index.json, info.txt, sid_report.json, item_emb.npy")
    parser.add_argument("--method", default="rqkmeans", choices=METHODS, help="quantiser and its collision repair")
    parser.add_argument("--num_levels", type=positive_int, default=3, help="code levels before the extra level")
    parser.add_argument("--codebook_size", type=positive_int, nargs="+", default=None,
                        help="codes per level: one number for all levels or one per level "
                             "(default: power of two nearest sqrt(items), at most 256)")
    parser.add_argument("--embeddings_path", default=None,
                        help="precomputed item embeddings .npy (row i = i-th item); skips the encoder")
    text_embeddings.add_encoder_args(parser)
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: the original's: 42 constrained, 2024 RQ-VAE / RQ-KMeans+, 0 rqkmeans)")
    parser.add_argument("--kmeans_niter", type=positive_int, default=25, help="rqkmeans: k-means iterations per level")
    parser.add_argument("--kmeans_max_iter", type=positive_int, default=100,
                        help="rqkmeans_constrained, rqkmeans_plus: k-means-constrained iterations per level")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS,
                        help="rqvae, rqkmeans_plus: training epochs (the original: 5000-10000 on a GPU)")
    parser.add_argument("--lr", type=float, default=None,
                        help="rqvae, rqkmeans_plus: AdamW learning rate (default: the original's, 1e-3 / 1e-4)")
    parser.add_argument("--train_batch_size", type=positive_int, default=2048,
                        help="rqvae, rqkmeans_plus: items per training step")
    parser.add_argument("--layers", type=positive_int, nargs="+", default=[2048, 1024, 512, 256, 128, 64],
                        help="rqvae, rqkmeans_plus: encoder MLP widths (the decoder mirrors them)")
    parser.add_argument("--e_dim", type=positive_int, default=32,
                        help="rqvae: latent (codebook vector) size (rqkmeans_plus: the embedding size)")
    parser.add_argument("--eval_step", type=positive_int, default=DEFAULT_EVAL_STEP,
                        help="rqvae, rqkmeans_plus: epochs between collision measurements; the state with the "
                             "fewest collisions is kept (the original: 50)")
    parser.add_argument("--warmup_epochs", type=int, default=50, help="rqvae, rqkmeans_plus: learning-rate warm-up")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return build_sids(**vars(args))


if __name__ == "__main__":
    run_main(lambda: main() and None)
