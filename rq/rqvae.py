"""RQ-VAE: an MLP auto-encoder whose latent is residually quantised by a stack of codebooks.

encoder: embedding -> latent z; level l picks the code nearest to the residual z - (codes of
levels < l); decoder: sum of the picked codes -> reconstructed embedding. Loss = reconstruction MSE
+ per level the codebook term ||sg(r) - e||^2 and beta * the commitment term ||r - sg(e)||^2;
gradients pass the quantiser straight through. Codebooks start from residual k-means of the
initial latents (k-means init), and codes left unused are re-seeded from random residuals so the
codebook stays in use. Run it with `rq/build_sids.py --method rqvae`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

import rqkmeans

logger = logging.getLogger("rqvae")


def mlp(dims: list[int]) -> nn.Sequential:
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ResidualQuantizer(nn.Module):
    def __init__(self, codebook_sizes: list[int], dim: int, beta: float):
        super().__init__()
        self.codebooks = nn.ParameterList([nn.Parameter(torch.randn(k, dim)) for k in codebook_sizes])
        self.beta = beta

    def forward(self, z):
        """(straight-through quantised z, codes (batch, levels), quantisation loss, residual seen by
        each level)."""
        residual = z
        quantized = torch.zeros_like(z)
        codes, residuals, loss = [], [], z.new_zeros(())
        for codebook in self.codebooks:
            code = torch.cdist(residual, codebook).argmin(dim=-1)
            chosen = codebook[code]
            loss = loss + F.mse_loss(chosen, residual.detach()) + self.beta * F.mse_loss(residual, chosen.detach())
            residuals.append(residual.detach())
            codes.append(code)
            quantized = quantized + chosen
            residual = residual - chosen.detach()
        return z + (quantized - z).detach(), torch.stack(codes, dim=1), loss, residuals

    @torch.no_grad()
    def reseed_unused(self, codes, residuals, generator):
        """Move every code no item uses onto a random residual of its level."""
        for level, codebook in enumerate(self.codebooks):
            unused = torch.ones(len(codebook), dtype=torch.bool)
            unused[codes[:, level]] = False
            n_unused = int(unused.sum())
            if n_unused:
                picks = torch.randint(len(residuals[level]), (n_unused,), generator=generator)
                codebook[unused.to(codebook.device)] = residuals[level][picks].to(codebook.device)


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, hidden_dims: list[int], latent_dim: int, codebook_sizes: list[int],
                 beta: float = 0.25):
        super().__init__()
        self.encoder = mlp([in_dim, *hidden_dims, latent_dim])
        self.quantizer = ResidualQuantizer(codebook_sizes, latent_dim, beta)
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), in_dim])

    def forward(self, x):
        quantized, codes, quant_loss, residuals = self.quantizer(self.encoder(x))
        return self.decoder(quantized), codes, quant_loss, residuals


@contextmanager
def single_cpu_thread():
    """The RQ-VAE's matrices are small: a second CPU thread costs more in synchronisation than it
    saves (3-10x slower when the cores are shared with other work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@single_cpu_thread()
def train_rqvae(embeddings: np.ndarray, codebook_sizes: list[int], hidden_dims=(256, 128), latent_dim=32,
                epochs=300, batch_size=1024, lr=1e-3, beta=0.25, reseed_every=25, seed=0,
                device="cpu") -> tuple[np.ndarray, dict]:
    """Train an RQ-VAE on the item embeddings; returns (codes (n_items, levels) int64, squared
    distances (n_items, last codebook size) of each item's last-level residual to every last-level
    code, stats)."""
    rqkmeans.check_codebook_sizes(len(embeddings), codebook_sizes)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(embeddings, dtype=torch.float32)
    # standardise: unit-norm text embeddings have per-dimension values ~1/sqrt(d), far below the
    # scale the default learning rate and k-means init expect
    x = ((x - x.mean(0)) / x.std().clamp(min=1e-8)).to(device)
    model = RQVAE(x.shape[1], list(hidden_dims), latent_dim, codebook_sizes, beta).to(device)

    with torch.no_grad():
        _, codebooks, _ = rqkmeans.residual_kmeans(model.encoder(x).cpu().numpy(), codebook_sizes, seed=seed)
        for parameter, centroids in zip(model.quantizer.codebooks, codebooks):
            parameter.copy_(torch.as_tensor(centroids))

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = len(x)
    progress = tqdm(range(epochs), desc="rqvae", unit=" epochs")
    for epoch in progress:
        model.train()
        permutation = torch.randperm(n, generator=generator).to(device)
        epoch_codes, epoch_residuals = [], []
        total_recon = total_quant = 0.0
        for start in range(0, n, batch_size):
            batch = x[permutation[start:start + batch_size]]
            reconstruction, codes, quant_loss, residuals = model(batch)
            recon_loss = F.mse_loss(reconstruction, batch)
            optimizer.zero_grad(set_to_none=True)
            (recon_loss + quant_loss).backward()
            optimizer.step()
            total_recon += recon_loss.item() * len(batch)
            total_quant += quant_loss.item() * len(batch)
            epoch_codes.append(codes)
            epoch_residuals.append(residuals)
        progress.set_postfix(recon=total_recon / n, quant=total_quant / n)
        if reseed_every and (epoch + 1) % reseed_every == 0 and epoch + 1 < epochs:
            model.quantizer.reseed_unused(
                torch.cat(epoch_codes).cpu(),
                [torch.cat(level).cpu() for level in zip(*epoch_residuals)],
                generator,
            )

    model.eval()
    with torch.no_grad():
        reconstruction, codes, _, residuals = model(x)
        last_distances = torch.cdist(residuals[-1], model.quantizer.codebooks[-1]) ** 2
        stats = {"reconstruction_mse": float(F.mse_loss(reconstruction, x)), "epochs": epochs}
    logger.info("rqvae: %s", stats)
    return codes.cpu().numpy().astype(np.int64), last_distances.cpu().numpy(), stats
