"""Where is the task's signal? A linear probe on every layer of a pretrained and of a random backbone.

Finetuning mixes two questions: *do the pretrained features contain what the task needs*, and *can a few labels
find it*. A linear probe separates them. For each backbone (a pretraining run, and the same architecture with
random weights), every speech of the task is run through the frozen network once; the hidden states after the
embedding (layer 0) and after each layer are pooled (mean over the real tokens, or the last token) and
standardised with the training features' mean and standard deviation; then a logistic regression

.. math:: p(y \\mid x) = \\operatorname{softmax}(W \\operatorname{pool}(h^{(l)}(x)) + b)

is trained on ``n`` labelled examples with class-balanced weights (each class weighs the same in the loss;
scikit-learn's, its strength C chosen from ``C_GRID`` by validation macro-F1), and scored once on the test split.
Which pooling and layer to use is read from the validation column, never from test. A layer whose probe beats the
random network's same layer holds information that pretraining put there; a probe that beats finetuning with
the same labels says the finetuning, not the features, is what fails.

    OMP_NUM_THREADS=1 python benchmarks/probe_layers.py --runs runs/finetune_experiment/pretrain-transformer-clm-700

Writes the ``probe`` section of ``benchmarks/RESULTS.md``, ``benchmarks/probe_results.json`` and
``benchmarks/probe_layers.png`` (test macro-F1 against layer, one line per backbone and label count).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import warnings
from pathlib import Path

import torch
from matplotlib.figure import Figure
from results import machine_line, write_section
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from minipt import functional as MF
from minipt.data import load_task, shakespeare
from minipt.data.datasets import ClassificationDataset, collate_classification
from minipt.jobs.baselines import C_GRID
from minipt.jobs.finetune import select_train_examples
from minipt.jobs.pretrain import load_run
from minipt.metrics import accuracy, confusion_matrix, macro_f1
from minipt.models import build_model
from minipt.models.heads import pool
from minipt.runs.folder import write_json

HERE = Path(__file__).resolve().parent


def backbones(run_dir: str, seed: int = 0) -> dict[str, tuple[torch.nn.Module, object]]:
    """The pretrained language model of ``run_dir`` and the same architecture with random weights."""
    model, tokenizer, saved = load_run(run_dir)
    settings = dict(saved["model"])
    architecture = settings.pop("architecture")
    torch.manual_seed(seed)
    random_model = build_model(architecture, **settings)
    name = Path(run_dir).name
    return {f"{name}": (model, tokenizer), f"{name} (random weights)": (random_model, tokenizer)}


@torch.no_grad()
def layer_features(model, tokenizer, examples, labels, max_len: int, batch_size: int = 64) -> dict:
    """``{pooling: (L + 1, N, H) features}`` for ``"mean"`` and ``"last"``, and the label ids ``(N,)``."""
    model.eval()
    dataset = ClassificationDataset(examples, tokenizer, labels, max_len, add_cls=False)
    pooled = {"mean": [], "last": []}
    batches = [collate_classification([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))],
                                      tokenizer.pad_id) for start in range(0, len(dataset), batch_size)]  # in order
    for batch in batches:
        mask = batch["attention_mask"]  # (B, T)
        _, _, intermediates = model(batch["input_ids"], attention_mask=mask, return_intermediates=True)
        for pooling in pooled:
            per_layer = [pool(hidden, mask, pooling) for hidden in intermediates["hidden_states"]]
            pooled[pooling].append(torch.stack(per_layer))  # (L + 1, B, H)
    targets = torch.cat([batch["labels"] for batch in batches])  # (N,)
    return {pooling: torch.cat(chunks, dim=1) for pooling, chunks in pooled.items()}, targets


def fit_probe(x_train, y_train, c: float, seed: int):
    """Standardise (the training features' mean and std), then a class-balanced logistic regression of strength c."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000,
                                                               random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return probe.fit(x_train.numpy(), y_train.numpy())


def probe_f1(probe, x, y, num_classes: int) -> float:
    predictions = torch.from_numpy(probe.predict(x.numpy()))  # (N,)
    return macro_f1(confusion_matrix(predictions, y, num_classes))


def choose_probe_c(x_train, y_train, x_val, y_val, num_classes: int, seed: int) -> tuple[float, float]:
    """The selection, on training and validation features only: the C of C_GRID with the best validation macro-F1
    (the smallest of ties), and that score."""
    scores = {c: probe_f1(fit_probe(x_train, y_train, c, seed), x_val, y_val, num_classes) for c in C_GRID}
    best = max(C_GRID, key=lambda c: (scores[c], -c))
    return best, scores[best]


def linear_probe(x_train, y_train, x_val, y_val, x_test, y_test, num_classes: int, seed: int) -> dict:
    """C chosen on validation (:func:`choose_probe_c`), then the test split scored once with it."""
    c, val_f1 = choose_probe_c(x_train, y_train, x_val, y_val, num_classes, seed)
    predictions = torch.from_numpy(fit_probe(x_train, y_train, c, seed).predict(x_test.numpy()))  # (N_test,)
    return {"test_accuracy": accuracy(predictions, y_test),
            "test_macro_f1": macro_f1(confusion_matrix(predictions, y_test, num_classes)),
            "val_macro_f1": val_f1, "c": c}


@torch.no_grad()
def format_shift(run_dir: str, n_speeches: int = 200, seed: int = 0) -> dict:
    """Next-token loss (nats per token) of a next-token run on ``n_speeches`` validation-play speeches of the
    verse task, written as printed (speaker, one printed line per line, capitals kept: the ``shakespeare``
    corpus) and as the classifier reads them (lines joined with spaces, lower-cased: the ``shakespeare-flat``
    corpus); each cut to the model's context."""
    model, tokenizer, saved = load_run(run_dir)
    if saved["pretrain"]["objective"] != "clm":
        return {}
    chosen = [speech for speech in shakespeare.speeches()
              if shakespeare.play_split(speech.play) == "validation" and shakespeare.verse_label(speech.lines)]
    chosen = random.Random(seed).sample(chosen, n_speeches)
    losses = {}
    for name, render in (("printed", shakespeare.format_speech), ("task text", shakespeare.task_text)):
        total, count = 0.0, 0
        context = saved["pretrain"]["block_size"]
        for speech in chosen:
            ids = torch.tensor(tokenizer.encode(render(speech))[: context + 1])[None]  # (1, T + 1)
            logits, _ = model(ids[:, :-1])  # (1, T, V)
            total += float(MF.cross_entropy(logits[0], ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
        losses[name] = total / count
    return losses


def probe(args: argparse.Namespace, done: dict) -> dict:
    """Probe results of every backbone of ``args.runs`` not already in ``done`` (a previous results file)."""
    data = load_task(args.task)
    results = {}
    for run_dir in args.runs.split(","):
        for backbone, (model, tokenizer) in backbones(run_dir).items():
            if any(key.startswith(f"{args.task}/{backbone}/") for key in done):
                continue
            start = time.perf_counter()
            val = select_train_examples(data.validation, args.val_examples, 0)
            split_features = {name: layer_features(model, tokenizer, examples, data.labels, args.max_len)
                              for name, examples in (("train", data.train), ("val", val), ("test", data.test))}
            extract_seconds = time.perf_counter() - start
            (train_x, train_y), (val_x, val_y), (test_x, test_y) = (split_features[s] for s in ("train", "val", "test"))
            text_index = {id(example): i for i, example in enumerate(data.train)}
            for size in [0 if s == "all" else int(s) for s in args.sizes.split(",")]:
                for seed in [int(s) for s in args.seeds.split(",")] if size else [0]:
                    rows = torch.tensor([text_index[id(e)] for e in select_train_examples(data.train, size, seed)])
                    for pooling in args.poolings.split(","):
                        for layer in range(train_x[pooling].shape[0]):
                            outcome = linear_probe(train_x[pooling][layer, rows], train_y[rows],
                                                         val_x[pooling][layer], val_y, test_x[pooling][layer], test_y,
                                                         len(data.labels), seed)
                            key = f"{args.task}/{backbone}/{pooling}/{layer}/{size}/{seed}"
                            results[key] = {"task": args.task, "backbone": backbone, "pooling": pooling,
                                            "layer": layer, "size": size, "seed": seed,
                                            "extract_seconds": extract_seconds, **outcome}
            print(f"{backbone}: features in {extract_seconds:.0f} s", flush=True)
    return results


def spread(values: list[float]) -> float:
    """The sample standard deviation (0 with one value)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(results: dict) -> dict[tuple, tuple[float, float, float, float, int, float]]:
    """(backbone, pooling, size, layer) -> (test accuracy mean, sd, test macro-F1 mean, sd, seeds, validation
    macro-F1 mean)."""
    groups: dict[tuple, list[dict]] = {}
    for entry in results.values():
        groups.setdefault((entry["backbone"], entry["pooling"], entry["size"], entry["layer"]), []).append(entry)
    table = {}
    for key, entries in groups.items():
        accs, f1s = [e["test_accuracy"] for e in entries], [e["test_macro_f1"] for e in entries]
        table[key] = (statistics.mean(accs), spread(accs), statistics.mean(f1s), spread(f1s), len(entries),
                      statistics.mean(e["val_macro_f1"] for e in entries))
    return table


def markdown(results: dict, args: argparse.Namespace) -> str:
    """One row per (backbone, pooling, labels); one column per layer: test accuracy / macro-F1 (means)."""
    table = summarise(results)
    rows: dict[tuple, dict[int, tuple]] = {}
    for (backbone, pooling, size, layer), summary in table.items():
        rows.setdefault((backbone, pooling, size), {})[layer] = summary
    n_layers = max(len(layers) for layers in rows.values())
    lines = [f"Linear probes on `{args.task}` (first {args.max_len} tokens, standardised pooled hidden states, "
             "class-balanced logistic regression, C chosen by validation macro-F1 on "
             f"{args.val_examples} validation speeches; test = the held-out plays). Each cell: test accuracy / "
             "test macro-F1, the mean over the label subsets' seeds (3 seeds for 200 labels, 1 for all); "
             "layer 0 = the embedding.", machine_line(), "",
             "| backbone | pooling | labels | " + " | ".join(f"layer {layer}" for layer in range(n_layers)) + " |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in range(n_layers)) + " |"]
    for (backbone, pooling, size), layers in sorted(rows.items()):
        cells = [f"{layers[layer][0]:.3f} / {layers[layer][2]:.3f}" if layer in layers else "" for layer in
                 range(n_layers)]
        lines.append(f"| {backbone} | {pooling} | {size or 'all'} | " + " | ".join(cells) + " |")
    lines += ["", "Chosen on validation (mean validation macro-F1 over the seeds; test shown, never used to choose):",
              "", "| backbone | labels | pooling, layer | validation macro-F1 | test macro-F1 |",
              "| --- | ---: | --- | ---: | ---: |"]
    for (backbone, size), (pooling, layer) in chosen_on_validation(table).items():
        summary = table[(backbone, pooling, size, layer)]
        lines.append(f"| {backbone} | {size or 'all'} | {pooling}, layer {layer} | {summary[5]:.3f} | "
                     f"{summary[2]:.3f} |")
    return "\n".join(lines)


def chosen_on_validation(table: dict) -> dict[tuple, tuple[str, int]]:
    """(backbone, size) -> the (pooling, layer) with the best mean validation macro-F1."""
    best: dict[tuple, tuple[float, str, int]] = {}
    for (backbone, pooling, size, layer), summary in sorted(table.items()):
        if (backbone, size) not in best or summary[5] > best[(backbone, size)][0]:
            best[(backbone, size)] = (summary[5], pooling, layer)
    return {key: (pooling, layer) for key, (_, pooling, layer) in best.items()}


def plot(results: dict, path: Path, pooling: str) -> None:
    """Test macro-F1 against layer: one panel per label count, one colour per run, solid = pretrained weights,
    dashed = the same architecture with random weights."""
    table = summarise(results)
    sizes = sorted({size for (_, p, size, _) in table if p == pooling}, key=lambda size: size or float("inf"))
    runs = sorted({backbone.replace(" (random weights)", "") for (backbone, _, _, _) in table})
    colours = {run: f"C{index}" for index, run in enumerate(runs)}
    figure = Figure(figsize=(5 * len(sizes), 5.5))
    for panel, size in enumerate(sizes):
        axes = figure.add_subplot(1, len(sizes), panel + 1)
        curves: dict[str, list] = {}
        for (backbone, p, s, layer), (_, _, f1, f1_sd, _) in table.items():
            if p == pooling and s == size:
                curves.setdefault(backbone, []).append((layer, f1, f1_sd))
        for backbone, points in sorted(curves.items()):
            layers, f1s, sds = zip(*sorted(points), strict=True)
            run = backbone.replace(" (random weights)", "")
            axes.errorbar(layers, f1s, yerr=sds, marker="o", capsize=3, color=colours[run],
                          linestyle="--" if "random" in backbone else "-", label=backbone)
        axes.set_xticks(range(1 + max(layer for (_, _, _, layer) in table)))
        axes.set_xlabel("layer (0 = embedding)")
        axes.set_ylabel("test macro-F1")
        axes.set_title(f"{size or 'all'} labels, {pooling} pooling")
        axes.grid(alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=2, fontsize=7)
    figure.tight_layout(rect=(0, 0.06 * (1 + len(labels) // 2) / 2, 1, 1))
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description="Linear probes on every layer (see the module docstring).")
    parser.add_argument("--runs", required=True, help="pretraining run folders, comma-separated")
    parser.add_argument("--task", default="shakespeare-verse")
    parser.add_argument("--sizes", default="200,all", help="labelled examples, comma-separated; 'all' = all")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the label subsets ('all' uses one)")
    parser.add_argument("--poolings", default="mean,last")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--val-examples", type=int, default=400)
    parser.add_argument("--results", default=str(HERE / "probe_results.json"))
    parser.add_argument("--plot", default=str(HERE / "probe_layers.png"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the table from the results file")
    args = parser.parse_args()
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    shifts = results.pop("format_shift", {})
    if not args.report_only:
        results.update(probe(args, results))
        for run in args.runs.split(","):
            if Path(run).name not in shifts and (shift := format_shift(run)):
                shifts[Path(run).name] = shift
        write_json(results_path, {**results, "format_shift": shifts})
    current = {k: v for k, v in results.items() if v["task"] == args.task
               and any(v["backbone"].startswith(Path(run).name) for run in args.runs.split(","))}
    text = markdown(current, args)
    for run in args.runs.split(","):
        if Path(run).name in shifts:
            shift = shifts[Path(run).name]
            text += (f"\n\nFormat shift of `{Path(run).name}`: next-token loss on 200 validation speeches "
                     f"{shift['printed']:.3f} nats/token as printed, {shift['task text']:.3f} as the classifier "
                     "reads them (lines joined, lower-cased).")
    write_section("probe", text)
    plot(current, Path(args.plot), args.poolings.split(",")[0])
    print(text)


if __name__ == "__main__":
    main()
