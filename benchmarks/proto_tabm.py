"""A candidate for issue 21 item 4, measured before it is built: TabM-mini (Gorishniy et al., ICLR 2025) on
our residual MLP at small training sizes, beside the default preset and LightGBM on the same rows.

    .venv/bin/python benchmarks/proto_tabm.py --sizes 3000 --seeds 1234 1235 1236
    .venv/bin/python benchmarks/proto_tabm.py --sizes 30000 --k 8 --seeds 1234

Not the product: a prototype with its own small loop, to decide what building it in needs. k members share
every weight of the network; each scales the input features by its own vector (random signs at the start,
learned: TabM-mini's one multiplicative adapter) and has its own output unit (head_width -> 1); the loss is
the mean of the members' losses, the prediction the mean of their probabilities. Early stopping on the
last 10 % of the training rows (as the default preset holds out), AdamW, batch 256, patience 16.
--variants also measures what a simpler build would do: one shared output unit, and the loss of the mean
prediction instead of the mean of the losses. Rows as bench_sizes.py takes them (first N rows, last 50,000
to score), one thread. Results: benchmarks/results/proto_tabm_<cpu>.txt.
"""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sizes  # noqa: E402
import common  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from higgs_lora.model.network import ResidualMLP  # noqa: E402
from higgs_lora.report.metrics import binary_metrics  # noqa: E402


class TabMMini(nn.Module):
    def __init__(self, *, k: int, n_features: int, dropout: float, shared_head: bool):
        super().__init__()
        self.net = ResidualMLP(n_features=n_features, dropout=dropout)
        self.scale = nn.Parameter(torch.randint(0, 2, (k, n_features)).float() * 2 - 1)   # random signs
        self.head_w = nn.Parameter(torch.randn(k, self.net.config.head_width) / self.net.config.head_width ** 0.5)
        self.head_b = nn.Parameter(torch.zeros(k))
        self.shared_head = shared_head

    def forward(self, x_batch_features: torch.Tensor) -> torch.Tensor:
        """[batch, n_features] -> member logits [k, batch]."""
        h = torch.relu(self.net.input(x_batch_features.unsqueeze(0) * self.scale.unsqueeze(1)))
        for block in self.net.blocks:
            h = block(h)
        h = torch.relu(self.net.hidden(h))
        if self.shared_head:
            return self.net.output(h).squeeze(-1)
        return torch.einsum("kbh,kh->kb", h, self.head_w) + self.head_b[:, None]


def mean_probability_logit(member_logits: torch.Tensor) -> torch.Tensor:
    """logit of the members' mean probability, from logsigmoids (exact, no 0/1 clipping)."""
    return (torch.logsumexp(nn.functional.logsigmoid(member_logits), 0)
            - torch.logsumexp(nn.functional.logsigmoid(-member_logits), 0))


def run(name: str, n: int, seed: int, *, k: int, dropout: float = 0.1, shared_head: bool = False,
        mean_of_losses: bool = True, lr: float = 2e-3, wd: float = 3e-4, batch: int = 256,
        max_epochs: int = 300, patience: int = 16) -> dict:
    xtr, ytr, xte, yte = bench_sizes.rows_of(name, n)
    n_fit = n - int(round(n * 0.1))
    mu, sd = xtr[:n_fit].mean(0), xtr[:n_fit].std(0)
    sd[sd == 0] = 1
    z = lambda a: torch.from_numpy((a - mu) / sd).float()
    xt, yt, xv, yv = z(xtr[:n_fit]), torch.from_numpy(ytr[:n_fit]).float(), z(xtr[n_fit:]), torch.from_numpy(ytr[n_fit:]).float()
    torch.manual_seed(seed)
    model = TabMMini(k=k, n_features=xt.shape[1], dropout=dropout, shared_head=shared_head)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    best, state, bad, t = float("inf"), None, 0, time.process_time()
    for epoch in range(max_epochs):
        epochs_run = epoch + 1
        model.train()
        perm = torch.randperm(len(yt))
        for i in range(0, len(yt), batch):
            idx = perm[i:i + batch]
            logits = model(xt[idx])
            target = yt[idx]
            loss = (nn.functional.binary_cross_entropy_with_logits(logits, target.expand(k, -1)) if mean_of_losses
                    else nn.functional.binary_cross_entropy_with_logits(mean_probability_logit(logits), target))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = nn.functional.binary_cross_entropy_with_logits(mean_probability_logit(model(xv)), yv).item()
        if val < best:
            best, bad, state = val, 0, {key: v.clone() for key, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(state)
    with torch.no_grad():
        logit = mean_probability_logit(model(z(xte)))
    auc = binary_metrics(logit, torch.from_numpy(yte).float())["roc_auc"]
    return dict(data=name, rows=n, seed=seed, k=k, dropout=dropout, shared_head=shared_head,
                mean_of_losses=mean_of_losses, auc=auc, epochs=epochs_run, cpu_s=time.process_time() - t)


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["sim", "kde"])
    p.add_argument("--sizes", nargs="+", type=int, default=[3000])
    p.add_argument("--seeds", nargs="+", type=int, default=[1234])
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--variants", action="store_true", help="also one shared output unit, and the loss of the mean")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    info = common.machine()
    lines = common.machine_lines(info, sys.argv) + [
        "| data | rows | k | variant | test AUC | epochs | CPU s |", "|---|---:|---:|---|---:|---:|---:|"]
    variants = [dict()] + ([dict(shared_head=True), dict(mean_of_losses=False)] if args.variants else [])
    runs = []
    for name in args.data:
        for n in args.sizes:
            for v in variants:
                for seed in args.seeds:
                    r = run(name, n, seed, k=args.k, **v)
                    runs.append(r)
                    label = "shared output unit" if v.get("shared_head") else "loss of the mean" if v else "TabM-mini"
                    lines.append(f"| {name} | {n:,} | {args.k} | {label} (seed {seed}) | {r['auc']:.4f} | {r['epochs']} | "
                                 f"{r['cpu_s']:.1f} |")
                    print(lines[-1], file=sys.stderr, flush=True)
    tag = info["cpu"].split()[0].lower().strip("()").replace("(r)", "")
    common.report(lines, args.out or common.ROOT / "benchmarks" / "results" / f"proto_tabm_{tag}.txt", runs=runs)


if __name__ == "__main__":
    main()
