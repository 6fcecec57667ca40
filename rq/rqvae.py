"""RQ-VAE and RQ-KMeans+, as the original's rq/models and rq/trainer.py define them, and its
Sinkhorn collision repair (generate_indices.py).

RQ-VAE: an MLP encoder (Dropout, Linear, [BatchNorm], ReLU per layer; Xavier-normal weights) maps
an item embedding to a latent; level l picks the code nearest to the residual left by levels < l
(or, with a Sinkhorn epsilon > 0, the code of a balanced Sinkhorn assignment of the batch); the
mirrored decoder reconstructs the embedding from the sum of the picked codes. Loss = reconstruction
MSE + quant weight x mean over levels of (||sg(r) - e||^2 + beta ||r - sg(e)||^2), gradients pass
the quantiser straight through. Codebooks start from k-means of the first training batch. Training:
AdamW, constant learning rate after a linear warm-up, gradient norm clipped to 1; every eval_step
epochs the collision rate of all items is measured and the state with the lowest one is kept (the
original's best_collision_model.pth, which its generate_indices.py reads).

RQ-KMeans+ (the GPR variant): the same model with a residual encoder z = x + MLP(x) whose last layer
starts at zero, latent size = embedding size, and codebooks that start from balanced RQ-KMeans
(so training starts exactly at the RQ-KMeans solution).

Collision repair (`sinkhorn_repair`): items that share all codes are re-assigned at the last level
by a Sinkhorn assignment within their group (epsilon 0.003 unless the model has one), for up to 20
rounds, as the original; identical embeddings stay together and are left to the extra level.

    python rq/rqvae.py --data_path X.emb-qwen-td.npy --ckpt_dir DIR --lr 1e-3 --epochs 10000 --batch_size 20480
"""

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from rq import rqkmeans, sids
from rq.embeddings import load_embeddings
from runtime import InputError, boolean

logger = logging.getLogger("rqvae")

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
              "adagrad": torch.optim.Adagrad, "rmsprop": torch.optim.RMSprop}
REPAIR_EPSILON = 0.003  # generate_indices.py: the last level's epsilon when the model has none
REPAIR_ROUNDS = 20


def mlp(dims: list[int], dropout: float = 0.0, bn: bool = False) -> nn.Sequential:
    """The original's MLPLayers: per layer Dropout, Linear, then BatchNorm and ReLU except after the last."""
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        linear = nn.Linear(d_in, d_out)
        nn.init.xavier_normal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers += [nn.Dropout(dropout), linear]
        if i < len(dims) - 2:
            layers += [nn.BatchNorm1d(d_out)] if bn else []
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualEncoder(nn.Module):
    """RQ-KMeans+: z = x + MLP(x), the MLP's last layer zero-initialised (z = x at the start)."""

    def __init__(self, body: nn.Sequential):
        super().__init__()
        self.mlp = body
        last = [m for m in body.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x):
        return x + self.mlp(x)


@torch.no_grad()
def sinkhorn(distances: torch.Tensor, epsilon: float, iterations: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The original's Sinkhorn-Knopp balancing, for G independent problems at once: distances
    (G, B, K) (rows beyond a problem's size masked out by `rows` (G, B) bool). Distances are first
    centred to [-1, 1] per problem, as the original's center_distance_for_constraint does; returns
    the transport plan (G, B, K): each code receives B/K, each real row about 1 (the last step
    balances the codes, as in the original)."""
    d = distances.double()
    if rows is None:
        rows = torch.ones(d.shape[:2], dtype=torch.bool, device=d.device)
    real = rows.unsqueeze(-1)
    high = torch.where(real, d, -torch.inf).amax(dim=(1, 2), keepdim=True)
    low = torch.where(real, d, torch.inf).amin(dim=(1, 2), keepdim=True)
    middle = (high + low) / 2
    d = (d - middle) / (high - middle + 1e-5)
    q = torch.where(real, torch.exp(-d / epsilon), torch.zeros((), dtype=d.dtype, device=d.device))
    q = q / q.sum(dim=(1, 2), keepdim=True)
    n_rows = rows.sum(dim=1).view(-1, 1, 1).double()
    n_codes = d.shape[-1]
    for _ in range(iterations):
        q = q / q.sum(dim=2, keepdim=True).clamp(min=torch.finfo(q.dtype).tiny) / n_rows
        q = q / q.sum(dim=1, keepdim=True).clamp(min=torch.finfo(q.dtype).tiny) / n_codes
    return q * n_rows


class VectorQuantizer(nn.Module):
    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, kmeans_init: bool = False, kmeans_iters: int = 100,
                 sk_epsilon: float = 0.0, sk_iters: int = 100):
        super().__init__()
        self.embedding = nn.Embedding(n_e, e_dim)
        self.beta, self.kmeans_iters = beta, kmeans_iters
        self.sk_epsilon, self.sk_iters = sk_epsilon, sk_iters
        # a buffer, so a saved model remembers that its codebook is already initialised
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        if kmeans_init:
            nn.init.zeros_(self.embedding.weight)
        else:
            nn.init.uniform_(self.embedding.weight, -1.0 / n_e, 1.0 / n_e)

    def distances(self, latent):
        codebook = self.embedding.weight
        return (latent ** 2).sum(1, keepdim=True) + (codebook ** 2).sum(1) - 2 * latent @ codebook.t()

    def forward(self, x, use_sk: bool = True):
        if not bool(self.initted) and self.training:
            centroids, _ = rqkmeans.kmeans(x.detach().cpu().numpy().astype(np.float32), len(self.embedding.weight),
                                           self.kmeans_iters, seed=0)
            self.embedding.weight.data.copy_(torch.as_tensor(centroids))
            self.initted.fill_(True)
        d = self.distances(x)
        if use_sk and self.sk_epsilon > 0:
            indices = sinkhorn(d.unsqueeze(0), self.sk_epsilon, self.sk_iters)[0].argmax(dim=-1)
        else:
            indices = d.argmin(dim=-1)
        x_q = self.embedding(indices)
        loss = F.mse_loss(x_q, x.detach()) + self.beta * F.mse_loss(x_q.detach(), x)
        return x + (x_q - x).detach(), loss, indices


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, n_e_list, e_dim, sk_epsilons, beta=0.25, kmeans_init=False, kmeans_iters=100, sk_iters=100):
        super().__init__()
        self.vq_layers = nn.ModuleList([
            VectorQuantizer(n_e, e_dim, beta, kmeans_init, kmeans_iters, eps, sk_iters)
            for n_e, eps in zip(n_e_list, sk_epsilons)
        ])

    def forward(self, x, use_sk: bool = True):
        """(quantised x, mean loss over levels, codes (batch, levels))."""
        x_q, residual, losses, indices = 0, x, [], []
        for quantizer in self.vq_layers:
            x_res, loss, level_indices = quantizer(residual, use_sk=use_sk)
            residual = residual - x_res
            x_q = x_q + x_res
            losses.append(loss)
            indices.append(level_indices)
        return x_q, torch.stack(losses).mean(), torch.stack(indices, dim=-1)


@dataclasses.dataclass
class RQVAEConfig:
    """The model's hyper-parameters (the original's flags of the same names); saved in checkpoints."""
    in_dim: int
    num_emb_list: list[int] = dataclasses.field(default_factory=lambda: [256, 256, 256])
    e_dim: int = 32
    layers: list[int] = dataclasses.field(default_factory=lambda: [2048, 1024, 512, 256, 128, 64])
    dropout_prob: float = 0.0
    bn: bool = False
    loss_type: str = "mse"
    quant_loss_weight: float = 1.0
    beta: float = 0.25
    kmeans_init: bool = True
    kmeans_iters: int = 100
    sk_epsilons: list[float] = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0])
    sk_iters: int = 50
    residual_encoder: bool = False  # RQ-KMeans+

    def __post_init__(self):
        if len(self.sk_epsilons) != len(self.num_emb_list):
            raise InputError(f"--sk_epsilons: {len(self.sk_epsilons)} values for {len(self.num_emb_list)} "
                             f"levels (--num_emb_list); give one per level")
        if self.residual_encoder and self.e_dim != self.in_dim:
            raise InputError(f"--e_dim {self.e_dim}: RQ-KMeans+ adds the encoder's output to its input, so the "
                             f"latent size must equal the embedding size ({self.in_dim})")
        if self.loss_type not in ("mse", "l1"):
            raise InputError(f"--loss_type {self.loss_type!r}: choose mse or l1")


class RQVAE(nn.Module):
    def __init__(self, config: RQVAEConfig):
        super().__init__()
        self.config = config
        dims = [config.in_dim, *config.layers, config.e_dim]
        encoder = mlp(dims, config.dropout_prob, config.bn)
        self.encoder = ResidualEncoder(encoder) if config.residual_encoder else encoder
        self.rq = ResidualVectorQuantizer(config.num_emb_list, config.e_dim, config.sk_epsilons, config.beta,
                                          config.kmeans_init, config.kmeans_iters, config.sk_iters)
        self.decoder = mlp(dims[::-1], config.dropout_prob, config.bn)

    def forward(self, x, use_sk: bool = True):
        x_q, rq_loss, indices = self.rq(self.encoder(x), use_sk=use_sk)
        return self.decoder(x_q), rq_loss, indices

    def compute_loss(self, out, quant_loss, x):
        recon = F.mse_loss(out, x) if self.config.loss_type == "mse" else F.l1_loss(out, x)
        return recon + self.config.quant_loss_weight * quant_loss, recon

    @torch.no_grad()
    def get_indices(self, x, use_sk: bool = False) -> torch.Tensor:
        return self.rq(self.encoder(x), use_sk=use_sk)[2]

    def load_codebooks(self, codebooks: list[np.ndarray]):
        """Start every level from given centroids (RQ-KMeans+ from balanced RQ-KMeans)."""
        if len(codebooks) != len(self.rq.vq_layers):
            raise InputError(f"{len(codebooks)} pretrained codebooks for {len(self.rq.vq_layers)} levels")
        for level, (layer, centroids) in enumerate(zip(self.rq.vq_layers, codebooks)):
            if tuple(centroids.shape) != tuple(layer.embedding.weight.shape):
                raise InputError(f"pretrained codebook {level}: shape {tuple(centroids.shape)}, the model's level "
                                 f"{level} is {tuple(layer.embedding.weight.shape)} (--num_emb_list x --e_dim)")
            layer.embedding.weight.data.copy_(torch.as_tensor(centroids))
            layer.initted.fill_(True)


@dataclasses.dataclass
class TrainingConfig:
    """The original Trainer's flags."""
    epochs: int = 5000
    batch_size: int = 2048
    lr: float = 1e-3
    learner: str = "AdamW"
    weight_decay: float = 0.0
    lr_scheduler_type: str = "constant"
    warmup_epochs: int = 50
    eval_step: int = 50
    seed: int = 2024


@dataclasses.dataclass
class TrainingResult:
    best_collision_state: dict
    best_collision_rate: float
    best_collision_epoch: int
    best_loss_state: dict
    best_loss: float
    epochs_per_s: float
    final_loss: float
    final_recon_loss: float


def collision_rate(model: RQVAE, x: torch.Tensor) -> float:
    codes = model.get_indices(x).cpu().numpy()
    return 1.0 - len(np.unique(codes, axis=0)) / len(codes)


def train(model: RQVAE, x: torch.Tensor, config: TrainingConfig) -> TrainingResult:
    """The original's Trainer.fit, in memory: train, measure collisions every eval_step epochs, keep
    the states with the lowest collision rate and the lowest training loss."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    if config.learner.lower() not in OPTIMIZERS:
        raise InputError(f"--learner {config.learner!r}: choose one of {sorted(OPTIMIZERS)}")
    largest_codebook = max(model.config.num_emb_list)
    if model.config.kmeans_init and min(config.batch_size, len(x)) < largest_codebook:
        raise InputError(f"--batch_size {config.batch_size}: the k-means initialisation clusters the first batch "
                         f"into {largest_codebook} codes, so a batch needs at least {largest_codebook} items")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = OPTIMIZERS[config.learner.lower()](model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches_per_epoch = -(-len(x) // config.batch_size)
    warmup = config.warmup_epochs * batches_per_epoch
    if config.lr_scheduler_type.lower() == "linear":
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, config.epochs * batches_per_epoch)
    else:
        scheduler = get_constant_schedule_with_warmup(optimizer, warmup)
    eval_step = min(config.eval_step, config.epochs)
    best_collision, best_collision_epoch, best_loss = np.inf, -1, np.inf
    best_collision_state = best_loss_state = None
    started = time.perf_counter()
    progress = tqdm(range(config.epochs), desc="rqvae", unit=" epochs", mininterval=5)
    for epoch in progress:
        model.train()
        total_loss = total_recon = 0.0
        for rows in torch.randperm(len(x), generator=generator).split(config.batch_size):
            batch = x[rows.to(x.device)]
            out, rq_loss, _ = model(batch)
            loss, recon = model.compute_loss(out, rq_loss, batch)
            if torch.isnan(loss):
                raise FloatingPointError(f"RQ-VAE training loss is NaN at epoch {epoch} (lower --lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
            total_recon += recon.item()
        if (epoch + 1) % eval_step == 0:
            model.eval()
            rate = collision_rate(model, x)
            if total_loss < best_loss:
                best_loss, best_loss_state = total_loss, _state_copy(model)
            if rate < best_collision:
                best_collision, best_collision_epoch, best_collision_state = rate, epoch, _state_copy(model)
            progress.set_postfix(loss=total_loss, recon=total_recon, collision_rate=rate)
    elapsed = time.perf_counter() - started
    model.load_state_dict(best_collision_state)
    model.eval()
    return TrainingResult(best_collision_state, float(best_collision), best_collision_epoch, best_loss_state,
                          float(best_loss), config.epochs / max(elapsed, 1e-9), total_loss, total_recon)


def _state_copy(model: nn.Module) -> dict:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@torch.no_grad()
def last_level_distances(model: RQVAE, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(codes (n, levels) by nearest code, squared distances (n, K) of each item's last-level
    residual to every last-level code)."""
    residual = model.encoder(x)
    codes = []
    for layer in model.rq.vq_layers:
        d = layer.distances(residual)
        code = d.argmin(dim=-1)
        codes.append(code)
        residual = residual - layer.embedding(code)
    return torch.stack(codes, dim=1).cpu().numpy().astype(np.int64), d.cpu().numpy()


def sinkhorn_repair(codes: np.ndarray, last_distances: np.ndarray, epsilon: float = REPAIR_EPSILON,
                    iterations: int = 50, rounds: int = REPAIR_ROUNDS) -> tuple[np.ndarray, int]:
    """The original generate_indices.py's collision handling: while items share all codes (up to
    `rounds` times), every group of such items is re-assigned at the last level by a Sinkhorn
    assignment over the group's last-level distances (all groups at once, padded). Returns (codes,
    rounds run)."""
    codes = codes.copy()
    distances = torch.as_tensor(last_distances)
    for round_no in range(rounds):
        rank = sids.collision_suffixes(codes)
        colliding = np.flatnonzero(rank >= 0)
        if not len(colliding):
            return codes, round_no
        _, group = np.unique(codes[colliding], axis=0, return_inverse=True)
        group = group.reshape(-1)
        n_groups, width = int(group.max()) + 1, int(rank[colliding].max()) + 1
        padded = torch.zeros((n_groups, width, distances.shape[1]), dtype=distances.dtype)
        rows = torch.zeros((n_groups, width), dtype=torch.bool)
        slot = torch.as_tensor(rank[colliding])
        padded[group, slot] = distances[colliding]
        rows[group, slot] = True
        plan = sinkhorn(padded, epsilon, iterations, rows)
        codes[colliding, -1] = plan[group, slot].argmax(dim=-1).numpy()
    return codes, rounds


# --- the original's command lines -----------------------------------------------------------


def add_model_args(parser, *, lr, kmeans_init, e_dim):
    """The flags of the original's rqvae.py / rqkmeans_plus.py (same names and defaults)."""
    parser.add_argument("--data_path", required=True, help="item embeddings .npy (row i = item i)")
    parser.add_argument("--lr", type=float, default=lr, help="learning rate")
    parser.add_argument("--epochs", type=int, default=5000, help="training epochs")
    parser.add_argument("--batch_size", type=int, default=2048, help="items per step")
    parser.add_argument("--num_workers", type=int, default=4,
                        help="accepted for the original's command lines; the embeddings are held in memory")
    parser.add_argument("--eval_step", type=int, default=50, help="epochs between collision-rate measurements")
    parser.add_argument("--learner", default="AdamW", help=f"optimizer: one of {sorted(OPTIMIZERS)} (any case)")
    parser.add_argument("--lr_scheduler_type", default="constant", choices=["constant", "linear"],
                        help="learning rate after warm-up: constant, or linear decay to 0")
    parser.add_argument("--warmup_epochs", type=int, default=50, help="epochs of linear learning-rate warm-up")
    parser.add_argument("--weight_decay", type=float, default=0.0, help="L2 regularisation weight")
    parser.add_argument("--dropout_prob", type=float, default=0.0, help="dropout before every linear layer")
    parser.add_argument("--bn", type=boolean, default=False, help="batch normalisation in the MLPs (True/False)")
    parser.add_argument("--loss_type", default="mse", choices=["mse", "l1"], help="reconstruction loss")
    parser.add_argument("--kmeans_init", type=boolean, default=kmeans_init,
                        help="start each codebook from k-means of the first batch (True/False)")
    parser.add_argument("--kmeans_iters", type=int, default=100, help="k-means iterations of that initialisation")
    parser.add_argument("--sk_epsilons", type=float, nargs="+", default=[0.0, 0.0, 0.0],
                        help="per level Sinkhorn epsilon during training (0: nearest code)")
    parser.add_argument("--sk_iters", type=int, default=50, help="Sinkhorn iterations")
    parser.add_argument("--device", default="cpu", help="torch device (the original's default is cuda:0)")
    parser.add_argument("--num_emb_list", type=int, nargs="+", default=[256, 256, 256], help="codebook size per level")
    parser.add_argument("--e_dim", type=int, default=e_dim,
                        help="latent (codebook vector) size" + ("" if e_dim else "; default: the embedding size"))
    parser.add_argument("--quant_loss_weight", type=float, default=1.0, help="weight of the quantisation loss")
    parser.add_argument("--beta", type=float, default=0.25, help="commitment loss weight")
    parser.add_argument("--layers", type=int, nargs="+", default=[2048, 1024, 512, 256, 128, 64],
                        help="hidden sizes of the encoder MLP (the decoder mirrors them)")
    parser.add_argument("--ckpt_dir", default="", help="checkpoints go to CKPT_DIR/<date-time>/")
    parser.add_argument("--seed", type=int, default=2024, help="random seed (the original fixes 2024)")


def configs_from_args(args, in_dim: int, residual_encoder: bool) -> tuple[RQVAEConfig, TrainingConfig]:
    model_config = RQVAEConfig(
        in_dim=in_dim, num_emb_list=args.num_emb_list, e_dim=args.e_dim or in_dim, layers=args.layers,
        dropout_prob=args.dropout_prob, bn=args.bn, loss_type=args.loss_type, quant_loss_weight=args.quant_loss_weight,
        beta=args.beta, kmeans_init=args.kmeans_init, kmeans_iters=args.kmeans_iters, sk_epsilons=args.sk_epsilons,
        sk_iters=args.sk_iters, residual_encoder=residual_encoder)
    training = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, learner=args.learner,
                              weight_decay=args.weight_decay, lr_scheduler_type=args.lr_scheduler_type,
                              warmup_epochs=args.warmup_epochs, eval_step=args.eval_step, seed=args.seed)
    return model_config, training


def train_and_save(args, residual_encoder: bool = False, codebooks: list[np.ndarray] | None = None) -> Path:
    """rqvae.py / rqkmeans_plus.py: train, then save best_collision_model.pth and
    best_loss_model.pth in CKPT_DIR/<date-time>/ (what generate_indices*.py read)."""
    embeddings = load_embeddings(args.data_path)
    model_config, training = configs_from_args(args, embeddings.shape[1], residual_encoder)
    rqkmeans.check_codebook_sizes(len(embeddings), model_config.num_emb_list)
    torch.manual_seed(training.seed)
    model = RQVAE(model_config)
    if codebooks is not None:
        model.load_codebooks(codebooks)
    x = torch.as_tensor(embeddings).to(args.device)
    result = train(model.to(args.device), x, training)
    folder = Path(args.ckpt_dir) / time.strftime("%b-%d-%Y_%H-%M-%S")
    folder.mkdir(parents=True, exist_ok=True)
    for name, state in (("best_collision_model.pth", result.best_collision_state),
                        ("best_loss_model.pth", result.best_loss_state)):
        payload = {"args": {**vars(args), "data_path": str(args.data_path)}, "config": dataclasses.asdict(model_config),
                   "best_loss": result.best_loss, "best_collision_rate": result.best_collision_rate,
                   "epoch": result.best_collision_epoch, "state_dict": {k: v.cpu() for k, v in state.items()}}
        with open(folder / f".{name}.tmp", "wb") as f:
            torch.save(payload, f)
        (folder / f".{name}.tmp").replace(folder / name)
    logger.info("best collision rate %.4f (epoch %d), best loss %.4f, %.2f epochs/s; checkpoints in %s",
                result.best_collision_rate, result.best_collision_epoch, result.best_loss, result.epochs_per_s, folder)
    return folder


def load_checkpoint(ckpt_path, device="cpu") -> tuple[RQVAE, dict]:
    """(model in eval mode, the checkpoint's saved flags) from a checkpoint this module saved."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise InputError(f"--ckpt_path {path}: checkpoint not found")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "config" not in checkpoint or "state_dict" not in checkpoint:
        raise InputError(f"--ckpt_path {path}: not a checkpoint of rq/rqvae.py or rq/rqkmeans_plus.py "
                         f"(keys {sorted(checkpoint)[:6]})")
    model = RQVAE(RQVAEConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint["args"]


def main(argv=None):
    from runtime import ArgumentParser

    parser = ArgumentParser(description=__doc__)
    add_model_args(parser, lr=1e-3, kmeans_init=True, e_dim=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    train_and_save(args)


if __name__ == "__main__":
    from runtime import run_main

    run_main(main)
