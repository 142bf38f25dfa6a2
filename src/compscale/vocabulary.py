"""The one vocabulary of compscale's JSON: one key, one unit and one meaning per quantity, in every command's
``--json`` output and every JSON file a tool writes (``search.json``, ``sweep.json``, ``cardinality.json``,
``families.json``, ``cam_study.json``, ``transfer.json``, ``demo.json``, ``metrics.jsonl``).

Accuracies are **fractions** (0.771, never 77.1) everywhere, the paper's too; costs are plain counts
(``macs`` = multiply-adds, the paper's "FLOPs"); ratios are plain multiples (``macs_ratio`` 2.57 = 2.57x);
times are ``*_seconds`` or ``latency_ms``. :data:`TERMS` is the table: the README's table is rendered from it
(:func:`markdown_table`) and ``tests/test_json_vocabulary.py`` runs every command that has ``--json`` and checks
every key it prints (and where) against it.

Some library results still name a quantity their own way inside compscale (``accuracy``, ``realized_ratio``,
...): :func:`normalize` renames them (:data:`RENAMED`) where JSON leaves the program — ``print_json`` in the
command layer and the writers of the JSON files — so that a rename is made in this one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["TERMS", "Term", "RENAMED", "OPAQUE", "normalize", "term", "markdown_table"]


@dataclass(frozen=True)
class Term:
    """One key of compscale's JSON: its unit, what it means, and which commands (or files) print it."""

    key: str
    unit: str
    meaning: str
    where: tuple[str, ...]


#: Units a :class:`Term` may have; the test checks values against the first four.
UNITS = {
    "fraction": "a number from 0 to 1 (0.771 = 77.1 %)",
    "difference": "a difference of two fractions, from -1 to 1 (0.012 = 1.2 points)",
    "count": "a whole number",
    "multiple": "a positive number: how many times (2.57 = 2.57x)",
    "relative": "measured / reference - 1 (-0.002 = 0.2 % below)",
    "ms": "milliseconds",
    "seconds": "seconds",
    "px": "pixels (the input's side)",
    "number": "a plain number",
    "text": "a string",
    "path": "a file or folder path",
    "bool": "true or false",
    "list": "a list (of the unit named in the meaning)",
    "object": "an object (its keys are in this table, unless it says otherwise)",
}

_STUDIES = ("study cardinality", "study families")
_ALL_TRAINED = ("search", "sweep", "demo", *_STUDIES, "cam-study", "transfer-demo")

#: Every key compscale's JSON uses, in the README's order: models and costs, accuracy, training, timing, output.
TERMS: tuple[Term, ...] = (
    # -- which model --------------------------------------------------------------------------------------
    Term("model", "text", "the model the object describes: a registered name, a spec or weights file, module:name "
         "(a study's own label for its models; scale, search: the baseline)",
         ("models", "profile", "scale", "family", "compare", "table", "latency", "bench", "export", "train",
          "finetune", "eval", "predict", "cam", "search", "sweep", *_STUDIES, "cam-study", "transfer-demo", "pareto")),
    Term("family", "text", "the model's family (efficientnet, resnet, ...)",
         ("models", "scale", "compare", "study families")),
    Term("description", "text", "what the registered model (cam-study: the chance level) is", ("models", "cam-study")),
    Term("peer", "text", "the model timed against `model`", ("latency",)),
    Term("peer_model", "text", "the peer library's name of the same architecture", ("export",)),
    Term("paper_model", "text", "the row of the EfficientNet paper's Table 2 that reports the same network",
         ("compare", "table")),
    Term("label", "text", "the study's short description of the model (e.g. `4x4d 1-1-1`)", ("study cardinality",)),
    Term("name", "text", "the name of the thing the object describes: a stage, a layer, a class, a dataset, a queue",
         ("profile", "scale", "sweep", "predict", "cam", "search", *_STUDIES)),
    # -- cost ---------------------------------------------------------------------------------------------
    Term("params", "count", "parameters", ("models", "profile", "scale", "family", "compare", "table", "search",
                                           "sweep", "demo", *_STUDIES, "cam-study", "latency", "pareto")),
    Term("macs", "count", "multiply-adds for one image (the paper's FLOPs), realized (after rounding)",
         ("models", "profile", "scale", "family", "compare", "table", "search", "sweep", "demo", *_STUDIES,
          "cam-study", "latency", "pareto")),
    Term("activations", "count", "elements written by conv/linear layers for one image",
         ("profile", "compare", *_STUDIES)),
    Term("paper_params", "count", "the paper's reported parameters", ("family", "compare", "table")),
    Term("paper_macs", "count", "the paper's reported FLOPs (multiply-adds)", ("family", "compare", "table")),
    Term("params_dev", "relative", "params / paper_params - 1", ("family", "table")),
    Term("macs_dev", "relative", "macs / paper_macs - 1", ("family", "table")),
    Term("base_macs", "count", "the baseline's multiply-adds", ("scale", "search", "study cardinality",
                                                                "study families")),
    Term("reference_macs", "count", "multiply-adds of the model the cost levels multiply", ("study families",)),
    Term("target_macs", "count", "the multiply-adds the model was matched to", ("sweep", "demo", *_STUDIES,
                                                                                 "cam-study")),
    Term("deviation", "relative", "macs / target_macs - 1", ("sweep", *_STUDIES, "cam-study")),
    Term("tolerance", "fraction", "the largest |deviation| (or |constraint - 2|) accepted", _STUDIES),
    Term("within_tolerance", "bool", "|deviation| <= tolerance", ("study cardinality", "study families")),
    Term("all_within_tolerance", "bool", "every model within the tolerance", _STUDIES),
    Term("max_abs_deviation", "relative", "the largest |deviation| of the study's models", ("cam-study",)),
    Term("params_ratio", "multiple", "params / the reference's params (compare: the first model; table: the "
         "EfficientNet of the row's accuracy group)", ("compare", "table")),
    Term("macs_ratio", "multiple", "macs / the reference's macs (the baseline's, the first model's, B0's, the group's "
         "EfficientNet's): realized", ("scale", "family", "compare", "table", "search", "sweep", "demo", "pareto")),
    Term("activations_ratio", "multiple", "activations / the first model's", ("compare",)),
    Term("nominal_macs_ratio", "multiple", "the cost ratio the rule promises, (alpha*beta^2*gamma^2)^phi",
         ("scale", "family", "search")),
    Term("paper_params_ratio", "multiple", "the paper's params / the paper's params of the group's EfficientNet",
         ("table",)),
    Term("budget", "multiple", "the variants' cost as a multiple of the baseline's", ("study cardinality",)),
    Term("levels", "list", "cost levels, multiples of reference_macs", ("study families",)),
    Term("level", "multiple", "the model's cost level, a multiple of reference_macs", ("study families",)),
    Term("level_index", "count", "the position of the level (1 = the first)", ("study families",)),
    # -- architecture and scaling -------------------------------------------------------------------------
    Term("resolution", "px", "input side", ("models", "profile", "scale", "family", "compare", "table", "bench",
                                            "sweep", "cam-study", "latency", "pareto")),
    Term("alpha", "number", "depth coefficient (d = alpha^phi)", ("scale", "search", "sweep", "demo")),
    Term("beta", "number", "width coefficient (w = beta^phi)", ("scale", "search", "sweep", "demo")),
    Term("gamma", "number", "resolution coefficient (r = gamma^phi)", ("scale", "search", "sweep", "demo")),
    Term("delta", "number", "cardinality coefficient (ResNeXt; 1 = off)", ("scale",)),
    Term("phi", "number", "compound coefficient", ("scale", "family", "sweep", "demo", "study families", "pareto")),
    Term("phis", "list", "the compound coefficients swept (pareto: timed)", ("sweep", "pareto")),
    Term("depth_multiplier", "multiple", "repeats multiplier d", ("scale", "family", "study families", "cam-study")),
    Term("width_multiplier", "multiple", "channels multiplier w", ("scale", "family", "study families", "cam-study")),
    Term("resolution_multiplier", "multiple", "input-side multiplier r", ("scale", "cam-study")),
    Term("cardinality_multiplier", "multiple", "cardinality multiplier (delta^phi)", ("scale",)),
    Term("multiplier", "multiple", "a single-dimension strategy's multiplier of its dimension (null: compound)",
         ("sweep",)),
    Term("strategy", "text", "how the budget is spent: baseline, compound, depth, width, resolution",
         ("sweep", "demo")),
    Term("dimension", "text", "what the budget is spent on: baseline, cardinality, width, depth",
         ("study cardinality",)),
    Term("rule", "text", "the scaling rule applied", ("study families",)),
    Term("scaling", "object", "how the model was scaled: rule, phi, depth_multiplier, width_multiplier",
         ("study families",)),
    Term("blocks", "count", "blocks (repeats summed over stages)", ("family", "cam-study")),
    Term("dropout", "fraction", "dropout rate before the classifier", ("family",)),
    Term("stages", "list", "the stage table: name, op, kernel, stride, repeats, channels per stage",
         ("scale", "sweep")),
    Term("op", "text", "a stage's block type", ("scale", "sweep")),
    Term("kernel", "count", "kernel size", ("scale", "sweep")),
    Term("stride", "count", "stride", ("scale", "sweep")),
    Term("repeats", "count", "blocks in a stage; for timings: the repetitions timed", ("scale", "sweep", "latency",
                                                                                       "bench")),
    Term("channels", "count", "output channels (dataset: image channels)", ("scale", "sweep", *_STUDIES)),
    Term("cardinality", "count", "groups of a ResNeXt bottleneck (C)", ("scale", "study cardinality")),
    Term("group_width", "count", "width of one group of a stage's grouped convolution", ("scale",)),
    Term("bottleneck_width", "count", "a stage's bottleneck width", ("scale",)),
    Term("base_width", "count", "ResNeXt width of one group at the first stage (d)", ("study cardinality",)),
    Term("layers", "list", "blocks per stage; profile --per-layer: one object per layer", ("profile",
                                                                                           "study cardinality")),
    Term("group_widths", "list", "width of one group per stage", ("study cardinality",)),
    Term("bottleneck_widths", "list", "bottleneck width per stage", ("study cardinality",)),
    Term("kind", "text", "a layer's type", ("profile",)),
    Term("spec", "object", "the full concrete spec (its own format: `spec_from_dict` reads it back)",
         ("scale", "search", *_STUDIES, "cam-study")),
    Term("baseline", "object", "the baseline: its spec and macs (demo: macs and params)", ("search", "demo")),
    Term("base", "object", "the baseline's spec (its own format, as `spec`)", ("cam-study",)),
    Term("settings", "object", "the run's settings, named as the command's flags name them", _STUDIES),
    Term("plan", "object", "the demo's settings (epochs, images, seeds of each step)", ("demo",)),
    Term("config", "object", "the run's configuration, named as its config file names it (the JSON files only)",
         ("cam-study", "transfer-demo")),
    Term("weights", "path", "the weights file the run started from (transfer.json)", ("transfer-demo",)),
    Term("reading", "text", "what the numbers say, in words (cam_study.json)", ("cam-study",)),
    # -- accuracy (fractions) -----------------------------------------------------------------------------
    Term("top1", "fraction", "top-1 accuracy on the test (or held-out) images (metrics.jsonl: null for an epoch "
         "--eval-every skipped, as are its top5 and loss)",
         ("train", "finetune", "eval", "search", "demo", "cam-study", "transfer-demo", "metrics.jsonl")),
    Term("scored_top1", "fraction", "top-1 on the images scored for CAMs", ("cam-study",)),
    Term("energy", "fraction", "share of a CAM's energy inside the object mask", ("cam-study",)),
    Term("pointing", "fraction", "share of CAM peaks inside the object mask", ("cam-study",)),
    Term("top5", "fraction", "top-5 accuracy", ("train", "finetune", "eval", "metrics.jsonl")),
    Term("top1_per_seed", "list", "top-1 of each seed (fractions)", ("search", "sweep", *_STUDIES)),
    Term("top1_mean", "fraction", "mean top-1 over seeds", ("sweep", *_STUDIES, "cam-study")),
    Term("top1_std", "fraction", "sample standard deviation of top-1 over seeds (0 with one seed)",
         ("sweep", *_STUDIES, "cam-study")),
    Term("top1_min", "fraction", "lowest top-1 over seeds", _STUDIES),
    Term("top1_max", "fraction", "highest top-1 over seeds", _STUDIES),
    Term("paper_top1", "fraction", "the paper's ImageNet top-1 (0.771, not 77.1)", ("compare", "table")),
    Term("paper_top5", "fraction", "the paper's ImageNet top-5", ("table",)),
    Term("per_class", "list", "top-1 of each class (fractions; null for a class without images)", ("eval",)),
    Term("gain_top1", "difference", "pretrained top-1 - scratch top-1", ("transfer-demo",)),
    Term("resnext_minus_inception", "difference", "ResNeXt top1_mean - Inception-ResNet top1_mean at a level",
         ("study families",)),
    Term("scored_top1_mean", "fraction", "top-1 on the images scored for CAMs, mean over seeds", ("cam-study",)),
    Term("scored_top1_std", "fraction", "its standard deviation over seeds", ("cam-study",)),
    Term("energy_mean", "fraction", "share of a CAM's energy inside the object mask, mean over seeds",
         ("cam-study",)),
    Term("energy_std", "fraction", "its standard deviation over seeds", ("cam-study",)),
    Term("pointing_mean", "fraction", "share of CAM peaks inside the object mask, mean over seeds", ("cam-study",)),
    Term("pointing_std", "fraction", "its standard deviation over seeds", ("cam-study",)),
    Term("chance", "object", "what a flat map scores: mask_area", ("cam-study",)),
    Term("mask_area", "fraction", "mean share of the image the object masks cover", ("cam-study",)),
    Term("prob", "fraction", "softmax probability of the class", ("predict", "cam")),
    Term("loss", "number", "mean cross-entropy on the test images (nats)", ("train", "finetune", "eval",
                                                                           "transfer-demo", "metrics.jsonl")),
    Term("train_loss", "number", "mean training cross-entropy of the epoch", ("transfer-demo", "metrics.jsonl")),
    Term("step_loss", "list", "training cross-entropy of each step of the epoch, in order (the last is step `step`)",
         ("metrics.jsonl",)),
    # -- what was compared, and the reading -------------------------------------------------------------
    Term("best", "object", "the best candidate (search: alpha, beta, gamma, top1); families: the best family",
         ("search", "demo", "study families")),
    Term("trials", "list", "one object per candidate trained", ("search",)),
    Term("state", "text", "a job's state: complete, pruned, fail, running, waiting", ("search",)),
    Term("job", "count", "a job's index in the queue", ("search",)),
    Term("aliases", "list", "other (alpha, beta, gamma) that give the same architecture", ("search",)),
    Term("candidates", "object", "step 1's candidates: counts at each filter and the distinct ones",
         ("search",)),
    Term("grid_points", "count", "(alpha, beta, gamma) grid points", ("search",)),
    Term("nominal_feasible", "count", "grid points within the constraint nominally", ("search",)),
    Term("realized_feasible", "count", "grid points whose realized macs_ratio is within tolerance", ("search",)),
    Term("both_feasible", "count", "grid points feasible both ways", ("search",)),
    Term("distinct", "count", "distinct architectures (search, demo: among the feasible candidates; scale "
         "--target-latency, pareto: timed)", ("search", "demo", "scale", "pareto")),
    Term("off_nominal", "count", "nominally feasible grid points whose realized ratio is far from the nominal",
         ("search",)),
    Term("warning", "text", "a warning, in words (null: none)", ("search",)),
    Term("sweep_phis", "list", "the phi values step 1's candidates were checked at for step 2", ("search",)),
    Term("sweep_rejected", "count", "distinct architectures dropped by that check", ("search",)),
    Term("sweep_check", "list", "per phi of that check: phi, rule_deviation, worst_match", ("search",)),
    Term("rule_deviation", "relative", "the compound model's realized ratio / target^phi - 1",
         ("search", "sweep", "demo")),
    Term("worst_match", "relative", "the largest |deviation| of the single-dimension models matched to it "
         "(null: one cannot reach the cost)", ("search", "demo")),
    Term("points", "list", "one object per sweep point (strategy, phi)", ("sweep",)),
    Term("verdict", "object", "the reading in words: summary, details and the counts", ("sweep", "demo")),
    Term("summary", "text", "one-line reading; cam-study: one object per model, over seeds", ("sweep", "demo",
                                                                                             "cam-study")),
    Term("details", "list", "the reading's lines", ("sweep", "demo")),
    Term("wins", "count", "comparisons compound scaling won", ("sweep", "demo")),
    Term("ties", "count", "comparisons tied (within the noise)", ("sweep", "demo")),
    Term("losses", "count", "comparisons compound scaling lost", ("sweep", "demo")),
    Term("warnings", "list", "warnings, in words (a model at chance, a cost off the rule, an unmatched model)",
         ("search", "sweep", "demo")),
    Term("comparisons", "list", "per phi: the compound model against the best single dimension at equal cost",
         ("sweep", "demo")),
    Term("compound_top1", "fraction", "the compound model's top1_mean", ("sweep", "demo")),
    Term("best_single", "text", "the single dimension with the highest top1_mean at that phi", ("sweep", "demo")),
    Term("best_single_top1", "fraction", "its top1_mean", ("sweep", "demo")),
    Term("others", "list", "the compound model against each other single dimension (strategy, then as `paired`)",
         ("sweep", "demo")),
    Term("paired", "object", "a comparison over seed-paired runs: gap, gap_low, gap_high, gap_sd, pairs, confidence, "
         "outcome", ("sweep", "demo", "study families")),
    Term("winner_paired", "object", "the winner against the runner-up, as `paired`", ("study cardinality",)),
    Term("gap", "difference", "mean of the paired top-1 differences (the first model minus the second)",
         ("sweep", "demo", *_STUDIES)),
    Term("gap_low", "difference", "low end of its confidence interval (null with one seed)",
         ("sweep", "demo", *_STUDIES)),
    Term("gap_high", "difference", "high end of its confidence interval (null with one seed)",
         ("sweep", "demo", *_STUDIES)),
    Term("gap_sd", "difference", "sample standard deviation of the paired differences (null with one seed)",
         ("sweep", "demo", *_STUDIES)),
    Term("pairs", "count", "seed pairs compared", ("sweep", "demo", *_STUDIES)),
    Term("confidence", "fraction", "the interval's confidence level (0.95)", ("sweep", "demo", *_STUDIES)),
    Term("outcome", "text", "won, tied, lost, or no noise estimate (one seed)", ("sweep", "demo", *_STUDIES)),
    Term("no_noise", "count", "comparisons with one seed: no noise estimate, no won/tied/lost", ("sweep", "demo")),
    Term("matched", "bool", "the single-dimension model reaches the target cost (false: not trained; `note` says "
         "why)", ("sweep",)),
    Term("seed_order", "list", "the training seed of each value of top1_per_seed", ("sweep", *_STUDIES)),
    Term("top1_interval", "list", "95 % interval of top1_mean over seeds, [low, high] (null with one seed)",
         ("sweep",)),
    Term("baseline_curve", "list", "the baseline's top1_mean after each epoch (fractions)", ("sweep", "demo")),
    Term("checks", "object", "the demo's goals, measured on the run: constraint, compound, worst_match, ... and "
         "whether each holds (`*_ok`, all_matched, no_shared_runs)", ("demo",)),
    Term("constraint", "number", "alpha * beta^2 * gamma^2 of the coefficients used", ("demo",)),
    Term("constraint_ok", "bool", "the constraint is 2 +/- 0.1", ("demo",)),
    Term("compound", "list", "per phi: the compound model's macs_ratio and rule_deviation", ("demo",)),
    Term("compound_ok", "bool", "every compound model within the rule's cost", ("demo",)),
    Term("all_matched", "bool", "every single-dimension model matched to its cost", ("demo",)),
    Term("no_shared_runs", "bool", "no network was trained for two points", ("demo",)),
    Term("paired_intervals", "count", "comparisons with a confidence interval", ("demo",)),
    Term("phis_compared", "count", "phi values compared", ("demo",)),
    Term("intervals_ok", "bool", "a confidence interval at every phi", ("demo",)),
    Term("cpu_seconds", "seconds", "CPU time of the whole command", ("demo",)),
    Term("load_average", "number", "the machine's highest 1-minute load average seen (other work slows timings)",
         ("demo",)),
    Term("ranking", "list", "dimensions, best first", ("study cardinality",)),
    Term("winner", "text", "the best dimension", ("study cardinality",)),
    Term("winner_separated", "bool", "the winner's lead exceeds the seed noise", ("study cardinality",)),
    Term("separated", "bool", "the difference exceeds the seed noise", ("study families",)),
    Term("comparison", "list", "one object per cost level", ("study families",)),
    Term("question", "text", "the question the study answers", _STUDIES),
    Term("study", "text", "the study's kind", _STUDIES),
    Term("models", "list", "one object per model", (*_STUDIES, "cam-study")),
    Term("rows", "list", "one object per row (pareto: per phi and inference path)", ("table", "pareto")),
    Term("official", "list", "one object per released B0..B7 (pareto: with a B0 baseline; timed when no larger than "
         "the largest phi)", ("family", "pareto")),
    Term("formula", "list", "one object per phi of the formula", ("family",)),
    Term("group", "text", "the row's accuracy group (the EfficientNet it is compared with)", ("table",)),
    Term("note", "text", "a remark: what differs from the paper and why (table), why a model is not trained (sweep)",
         ("table", "sweep")),
    Term("step2_coefficients", "object", "the (alpha, beta, gamma) step 2 used", ("demo",)),
    Term("step2_choice", "text", "why step 2 used them", ("demo",)),
    Term("search", "object", "step 1 in brief: epochs_used, epochs_exhaustive, distinct", ("demo",)),
    Term("quick", "bool", "the smoke-test-sized run", ("demo",)),
    Term("report", "path", "the report's index.html", ("demo",)),
    # -- training and data ----------------------------------------------------------------------------------
    Term("epoch", "count", "the epoch (1 = the first)", ("transfer-demo", "metrics.jsonl")),
    Term("epochs", "count", "epochs trained (search, sweep: per job)", ("train", "finetune", "search", "sweep",
                                                                          "cam-study", "transfer-demo")),
    Term("epochs_used", "count", "epochs successive halving trained", ("search", "demo")),
    Term("epochs_exhaustive", "count", "epochs training every candidate to the end would take", ("search", "demo")),
    Term("proxy_epochs", "count", "epochs per candidate", ("search",)),
    Term("exhaustive", "bool", "every candidate trained to the end", ("search",)),
    Term("step", "count", "global training step at the epoch's end", ("metrics.jsonl",)),
    Term("lr", "number", "learning rate at the epoch's last step", ("metrics.jsonl",)),
    Term("ema", "bool", "the evaluated weights are the EMA's", ("metrics.jsonl",)),
    Term("resumed_at_step", "count", "the step within the epoch it was resumed at", ("metrics.jsonl",)),
    Term("seeds", "count", "training seeds per model", ("sweep", *_STUDIES, "cam-study")),
    Term("seed", "count", "the training seed of a run", ("cam-study",)),
    Term("images", "count", "test images scored", ("cam-study",)),
    Term("history", "list", "one metrics.jsonl record per epoch", ("transfer-demo",)),
    Term("runs", "object", "the runs: transfer-demo: pretrained and scratch; cam-study: one per seed and model",
         ("cam-study", "transfer-demo")),
    Term("pretrained", "object", "the run fine-tuned from the packaged weights", ("transfer-demo",)),
    Term("scratch", "object", "the same run from random weights", ("transfer-demo",)),
    Term("data", "text", "the dataset trained on (fashion-mnist, digits, a folder)", ("sweep",)),
    Term("dataset", "object", "the dataset: name, channels, num_classes, train and test images", _STUDIES),
    Term("num_classes", "count", "classes", _STUDIES),
    Term("train", "count", "training images", _STUDIES),
    Term("test", "count", "test images", _STUDIES),
    Term("count", "count", "images evaluated", ("eval",)),
    Term("classes", "list", "class names, in label order", ("eval",)),
    Term("confusion", "list", "confusion matrix (rows: true class, columns: predicted), image counts", ("eval",)),
    Term("queue", "object", "the job queue: its study name, storage URL, exhaustive, proxy_epochs",
         ("search", "sweep")),
    Term("storage", "text", "the queue's database URL (password hidden)", ("search",)),
    # -- timing ---------------------------------------------------------------------------------------------
    Term("latency_ms", "ms", "median time of one batch (latency, table: batch 1)",
         ("table", "latency", "bench", "study families", "scale", "pareto")),
    Term("latency_low_ms", "ms", "low end of the median's 95 % interval (order statistics, distribution-free)",
         ("table", "latency", "bench", "scale", "pareto")),
    Term("latency_high_ms", "ms", "high end of the median's 95 % interval", ("table", "latency", "bench", "scale",
                                                                            "pareto")),
    Term("latency_samples", "count", "timed samples behind the median", ("latency", "bench", "scale", "pareto")),
    Term("latency_note", "text", "what to know about the timing: the machine was busy, the samples spread widely "
         "(empty: a clean timing)", ("table", "latency", "bench", "scale", "pareto")),
    Term("busy", "bool", "other processes held the cores while timing (load above the cores, or a quarter of them "
         "used by others): the latency is inflated", ("table", "latency", "bench", "scale", "pareto")),
    Term("load_per_core", "number", "1-minute load average per usable core while timing (above 1: more runnable "
         "threads than cores)", ("latency", "bench", "scale", "pareto")),
    Term("others_cpu", "fraction", "share of the cores other processes used while timing (null: unknown on this "
         "system)", ("latency", "bench", "scale", "pareto")),
    Term("peer_latency_ms", "ms", "the peer's latency_ms", ("latency",)),
    Term("peer_latency_low_ms", "ms", "the peer's latency_low_ms", ("latency",)),
    Term("peer_latency_high_ms", "ms", "the peer's latency_high_ms", ("latency",)),
    Term("peer_latency_spread", "relative", "the peer's latency_spread", ("latency",)),
    Term("latency_spread", "relative", "how widely the timed samples spread: (p90 - p10) / median (study families: "
         "(slowest - fastest) / median of the repetitions)", ("bench", "study families", "latency", "table", "scale",
                                                              "pareto")),
    Term("budget_ms", "ms", "the latency budget (scale --target-latency)", ("scale",)),
    Term("fresh_latency_ms", "list", "the chosen model's median latency in each fresh process that re-timed it (ms)",
         ("scale",)),
    Term("latency_bound_ms", "ms", "95 % upper prediction bound of the median a new fresh process measures (null: "
         "not re-timed)", ("scale",)),
    Term("confirmed", "bool", "latency_bound_ms is under budget_ms", ("scale",)),
    Term("within_noise", "bool", "the next phi's latency interval reaches under the budget, or a fresh process may run "
         "it within it (fresh processes differ by more than one process's interval): a re-run may find that it fits",
         ("scale",)),
    Term("next", "object", "the next phi (the smallest known not to fit the budget): phi, its costs and timing",
         ("scale",)),
    Term("timed", "bool", "the model was timed (pareto: a released model no larger than the largest phi's)",
         ("pareto",)),
    Term("runtime", "text", "what ran: eager PyTorch, or the backend compscale.optimize chose",
         ("latency", "scale", "pareto")),
    Term("images_per_s", "number", "images per second", ("bench", "metrics.jsonl")),
    Term("speedup_vs_peer", "multiple", "the peer's latency / this model's", ("latency", "bench")),
    Term("paper_speedup_vs_peer", "multiple", "the paper's speedup_vs_peer (Table 4), where it has one",
         ("latency",)),
    Term("library", "text", "compscale, or the peer library", ("bench",)),
    Term("backend", "text", "the inference path timed (eager, torchscript, onnxruntime, openvino, best, ...)",
         ("bench", "latency", "scale", "pareto")),
    Term("precision", "text", "arithmetic (fp32, bf16)", ("bench",)),
    Term("batch", "count", "images per call", ("bench", "latency", "scale", "pareto")),
    Term("threads", "count", "intra-op threads", ("latency", "bench", "scale", "pareto")),
    Term("seconds", "seconds", "wall time of the whole command (scale: of the latency search)",
         ("demo", *_STUDIES, "scale", "pareto")),
    Term("train_seconds", "seconds", "mean training time of one seed", _STUDIES),
    Term("epoch_seconds", "seconds", "training time of the epoch (evaluation excluded)", ("transfer-demo",
                                                                                           "metrics.jsonl")),
    # -- files and export -----------------------------------------------------------------------------------
    Term("out", "path", "what was written: the run folder, the file", ("train", "finetune", "export", "cam",
                                                                      "cam-study", "transfer-demo", "pareto")),
    Term("files", "object", "file name -> path of what was written", ("cam-study", "transfer-demo")),
    Term("plots", "list", "the figures written (paths)", ("table", "pareto")),
    Term("image", "path", "the image classified", ("predict",)),
    Term("top", "list", "the best classes: index, name, prob", ("predict", "cam")),
    Term("index", "count", "class index", ("predict", "cam")),
    Term("method", "text", "cam, gradcam or gradcam++", ("cam",)),
    Term("target", "count", "the class the map explains", ("cam",)),
    Term("format", "text", "onnx, torchscript, openvino, timm, torchvision", ("export",)),
    Term("tensors", "count", "tensors written", ("export",)),
    Term("input_shape", "list", "the traced input's shape (N, C, H, W)", ("export",)),
    Term("dynamic_batch", "bool", "the batch dimension is dynamic", ("export",)),
    Term("folded_batchnorms", "count", "BatchNorms folded into convolutions", ("export",)),
    Term("bytes", "count", "size of the file written", ("export",)),
    Term("max_abs_error", "number", "largest |logit difference| between the file and the module", ("export",)),
    Term("max_abs_logit", "number", "largest |logit| of the module on the check input", ("export",)),
    Term("relative_error", "number", "max_abs_error / max_abs_logit", ("export",)),
)

_BY_KEY = {t.key: t for t in TERMS}

#: Keys whose value has a format of its own, never renamed or checked inside: a spec (``spec_from_dict`` reads it
#: back), the run settings (named as the flags and TrainConfig name them), file name -> path mappings.
OPAQUE = frozenset({"spec", "base_spec", "base", "settings", "plan", "files", "config"})

#: Old name -> the vocabulary's, for names some results still use inside compscale.
RENAMED: dict[str, str] = {
    "accuracy": "top1",
    "accuracies": "top1_per_seed",
    "accuracy_mean": "top1_mean",
    "accuracy_std": "top1_std",
    "realized_ratio": "macs_ratio",
    "nominal_ratio": "nominal_macs_ratio",
    "depth": "depth_multiplier",
    "width": "width_multiplier",
    "resolution_mult": "resolution_multiplier",
    "epoch_time_s": "epoch_seconds",
    "img_s": "images_per_s",
}

#: Old name -> the vocabulary's, where the old name's value is an object (the same name holds a text elsewhere).
RENAMED_OBJECTS: dict[str, str] = {"data": "dataset", "study": "queue"}

#: Old name -> the vocabulary's, where the old name's value is a count (the same name holds an object elsewhere).
RENAMED_COUNTS: dict[str, str] = {"candidates": "distinct"}

#: A band over seeds (``{"mean", "std", "min", "max", "values", "seeds"}``) under this key becomes flat keys.
BANDS: dict[str, str] = {"accuracy": "top1"}
_BAND_KEYS = {"mean": "_mean", "std": "_std", "min": "_min", "max": "_max", "values": "_per_seed"}

#: In these lists, each object's ``name`` is its model's name.
MODEL_LISTS = frozenset({"models"})


def term(key: str) -> Term | None:
    """The vocabulary's entry for ``key``, or None."""
    return _BY_KEY.get(key)


def normalize(value: Any, _models: bool = False) -> Any:
    """``value`` (what is about to be written as JSON) with every key in the vocabulary's name: a copy, the input
    untouched. Objects under :data:`OPAQUE` keys are kept as they are."""
    if isinstance(value, list):
        return [normalize(v, _models) for v in value]
    if isinstance(value, tuple):
        return [normalize(v, _models) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in OPAQUE:
            out[key] = item
            continue
        if key in BANDS and isinstance(item, dict) and "mean" in item:
            prefix = BANDS[key]
            for k, v in item.items():
                out[prefix + _BAND_KEYS[k] if k in _BAND_KEYS else k] = v
            continue
        new = _new_name(key, item, _models)
        if new in value and new != key:
            new = key  # both names present: keep the object as it is rather than lose one
        out[new] = normalize(item, key in MODEL_LISTS)
    return out


def _new_name(key: str, item: Any, in_model_list: bool) -> str:
    if in_model_list and key == "name":
        return "model"
    if key in RENAMED_OBJECTS and isinstance(item, dict):
        return RENAMED_OBJECTS[key]
    if key in RENAMED_COUNTS and isinstance(item, int) and not isinstance(item, bool):
        return RENAMED_COUNTS[key]
    return RENAMED.get(key, key)


def markdown_table() -> str:
    """:data:`TERMS` as the README's Markdown table (key, unit, meaning, where)."""
    lines = ["| key | unit | meaning | printed by |", "|---|---|---|---|"]
    for t in TERMS:
        where = ", ".join(f"`{w}`" for w in t.where)
        lines.append(f"| `{t.key}` | {t.unit} | {t.meaning.replace('|', '/')} | {where} |")
    return "\n".join(lines)
