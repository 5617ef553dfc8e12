"""The report of a policy comparison, from its results (``compare.json``'s content): findings
read off the numbers, ``report.md`` (what was run, findings, accuracy per test size per policy
as mean ± std over seeds, cost and localization), ``compare.json`` and the plots
``accuracy_vs_size.png`` and (2-D data) ``heatmaps.png``."""

from __future__ import annotations

import os
import shlex

import numpy as np

from fcn_jax.caveats import MIN_STEPS, run_warning, throughput_meaningful
from fcn_jax.outputs import write_atomic, write_json
from fcn_jax.runs.stats import fmt, sort_sizes, stats
from fcn_jax.sizes import format_size

PRODUCTION_SIZE = (28, 16)  # the 28x16 test size every 2-D comparison includes
# A test size "falls off" when it loses more than this below the policy's best; "far" beyond
# the second threshold.
FALL_OFF = 0.05
BIG_FALL_OFF = 0.20


# --- findings: sentences computed from the numbers -----------------------------------------


def _mixed_policies(policies) -> list[str]:
    """The mixed policies compared (in POLICIES order), when fixed is compared too."""
    return [p for p in ("mixed_step", "mixed_example") if p in policies and "fixed" in policies]


def _means(results: dict, policy: str) -> dict[str, float]:
    return {k: v["mean"] for k, v in results["policies"][policy]["eval_accuracy"].items()}


def _listed(keys: list[str], limit: int = 6) -> str:
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def _pts(x: float) -> str:
    return f"{100 * x:.1f} points"


def _ranked(values: dict[str, float]) -> str:
    """``"a 0.912, b 0.880"``: policies by value, highest first."""
    return ", ".join(f"{p} {values[p]:.3f}" for p in sorted(values, key=values.get, reverse=True))


def findings(results: dict) -> list[str]:
    """A few sentences read off the numbers (none of them canned)."""
    policies = list(results["policies"])
    out = [_fall_off(results, p) for p in policies]
    out += _grid_summaries(results)
    out += [_mixed_vs_fixed(results, mixed) for mixed in _mixed_policies(policies)]
    native = {p: results["policies"][p]["test_accuracy"]["mean"] for p in policies}
    out.append(f"On the test images at their own sizes: {_ranked(native)}.")
    out.append("Training cost: " + ", ".join(_cost(results, p) for p in policies) + ".")
    out.append(_seed_noise(results))
    return out


def _fall_off(results: dict, policy: str) -> str:
    """Where ``policy`` falls off its best test size."""
    spec, n_sizes = results["policies"][policy]["train_size"], len(results["eval_sizes"])
    means = _means(results, policy)
    best, worst = max(means, key=means.get), min(means, key=means.get)
    loss = {k: means[best] - means[k] for k in sort_sizes(means)}
    drops = [k for k, v in loss.items() if v > FALL_OFF]
    big = [k for k, v in loss.items() if v > BIG_FALL_OFF]
    if not drops:
        return (
            f"{policy} ({spec}) stays within {_pts(FALL_OFF)} of its best ({means[best]:.3f} "
            f"on {best}) at every test size."
        )
    text = (
        f"{policy} ({spec}) peaks at {means[best]:.3f} on {best}; it loses more than "
        f"{_pts(FALL_OFF)} at {len(drops)} of {n_sizes} test sizes"
    )
    if big:
        text += f" and more than {_pts(BIG_FALL_OFF)} at {len(big)} ({_listed(big)})"
    else:
        text += f" ({_listed(drops)}) but nowhere more than {_pts(BIG_FALL_OFF)}"
    return f"{text}; its worst is {worst} at {means[worst]:.3f}."


def _grid_summaries(results: dict) -> list[str]:
    """Flatness, the grid average and the production size, across policies."""
    policies, out = list(results["policies"]), []
    means = {p: _means(results, p) for p in policies}
    if len(policies) > 1:
        spreads = {p: max(means[p].values()) - min(means[p].values()) for p in policies}
        flat = min(spreads, key=spreads.get)
        listed = ", ".join(f"{p} {spreads[p]:.3f}" for p in policies)
        out.append(
            f"Spread over the grid (max − min of the mean accuracy): {listed}; {flat} is the "
            "flattest."
        )
    grid_means = {p: float(np.mean(list(means[p].values()))) for p in policies}
    out.append(f"Averaged over all {len(results['eval_sizes'])} test sizes: {_ranked(grid_means)}.")
    prod = format_size(PRODUCTION_SIZE)
    if all(prod in means[p] for p in policies):
        at = {p: means[p][prod] for p in policies}
        out.append(f"At the production size {prod}: {_ranked(at)}.")
    return out


def _gap(other: dict, fixed: dict, key: str) -> str:
    gap = other[key] - fixed[key]
    return f"{_pts(abs(gap))} {'above' if gap >= 0 else 'below'}"


def _mixed_vs_fixed(results: dict, mixed: str) -> str:
    """Where ``mixed`` beats fixed, at the production size and at fixed's own size."""
    fixed, other = _means(results, "fixed"), _means(results, mixed)
    wins = [k for k in fixed if other[k] > fixed[k]]
    text = f"{mixed} beats fixed at {len(wins)} of {len(results['eval_sizes'])} test sizes"
    prod = format_size(PRODUCTION_SIZE)
    if prod in fixed:
        text += f"; at {prod} it is {_gap(other, fixed, prod)} fixed"
    own = results["fixed_size"]
    if own in fixed:
        text += f", at fixed's own size {own} {_gap(other, fixed, own)}"
    return text + "."


def _mean(r: dict, key: str) -> float | None:
    """The mean of a policy's ``key`` stats; None where it has none (older compare.json files
    have no steps)."""
    return (r.get(key) or {}).get("mean")


def _speed(r: dict) -> dict | None:
    """A policy's examples/s stats, None where its runs were too short to measure it
    (:mod:`fcn_jax.caveats`)."""
    return r["train_examples_per_sec"] if throughput_meaningful(_mean(r, "steps")) else None


def policy_warnings(results: dict) -> list[str]:
    """``"POLICY: undertrained: ..."`` for each policy whose runs mean little (too short, or
    a mean final train loss near chance)."""
    out = []
    for p, r in results["policies"].items():
        warning = run_warning(
            _mean(r, "steps"), _mean(r, "final_loss"), results["dataset"]["num_classes"]
        )
        out += [f"{p}: {warning}"] if warning else []
    return out


def _cost(results: dict, policy: str) -> str:
    r = results["policies"][policy]
    speed = (_speed(r) or {}).get("mean")
    text = f"{policy} {r['train_compiles']['mean']:.0f} compile(s)"
    text += f" at {speed:.0f} examples/s" if speed else ""
    if _mean(r, "train_examples"):
        text += (
            f", {r['train_examples']['mean']:.0f} examples, "
            f"{r['train_pixels']['mean'] / 1e6:.0f}M pixels"
        )
    return text + f", final loss {fmt(r['final_loss'])}"


def _seed_noise(results: dict) -> str:
    seeds, policies = len(results["seeds"]), list(results["policies"])
    if seeds == 1:
        return "One seed per policy: gaps of a few points may be seed noise (try --seeds=3)."
    noise = {
        p: float(np.mean([v["std"] for v in results["policies"][p]["eval_accuracy"].values()]))
        for p in policies
    }
    return (
        f"Seed noise (std over {seeds} seeds, averaged over test sizes): "
        + ", ".join(f"{p} {noise[p]:.3f}" for p in policies)
        + "; gaps below about twice that are not resolved."
    )


# --- report.md -------------------------------------------------------------------------------


def _length(cfg: dict) -> str:
    return f"{cfg['steps']} steps" if cfg["steps"] else f"{cfg['epochs']} epochs"


def _grid_mean(per_size: dict | None) -> dict | None:
    """Per-seed means over the test sizes of ``{size: stats}``, as stats."""
    if not per_size:
        return None
    per_seed = np.array([v["values"] for v in per_size.values()], dtype=float)
    return stats(per_seed.mean(axis=0))


def _scaled(stat: dict | None, factor: float) -> dict | None:
    """``stat`` with mean and std multiplied by ``factor``."""
    if not stat or stat.get("mean") is None:
        return None
    return {k: None if stat.get(k) is None else stat[k] * factor for k in ("mean", "std")}


def _command_text(command) -> str:
    return shlex.join(command) if command else "(library call)"


def report_markdown(results: dict) -> str:
    """The report as markdown (see the module docstring)."""
    lines = ["# Training-size policies compared", "", "## What was run", ""]
    lines += _what_was_run(results)
    lines += [f"- Note: {n}" for n in results["notes"]]
    lines += [f"- Warning: {w}" for w in policy_warnings(results)]
    lines += ["", "## Findings", ""] + [f"- {f}" for f in results["findings"]]
    lines += _accuracy_table(results) + _cost_table(results)
    lines += ["", "## Plots", "", "![accuracy against test size](accuracy_vs_size.png)"]
    if results["dataset"]["spatial_dims"] == 2:
        lines += ["", "![accuracy heatmaps](heatmaps.png)"]
    return "\n".join(lines) + "\n"


def _what_was_run(results: dict) -> list[str]:
    P, cfg, m, ds = results["policies"], results["config"], results["machine"], results["dataset"]
    seeds = results["seeds"]
    return [
        f"- Command: `{_command_text(results['command'])}`",
        f"- Dataset: {ds['name']} ({ds['train_examples']} train / {ds['test_examples']} test "
        f"examples, {ds['num_classes']} classes, {ds['spatial_dims']}-D)",
        f"- Model: {cfg['model']} (width {cfg['width']}, {results['num_params']} parameters), "
        f"{_length(cfg)} of batch {cfg['batch_size']}, "
        f"{cfg['optimizer']} lr {cfg['learning_rate']:g} ({cfg['schedule']})",
        "- Policies: " + ", ".join(f"{p} = `{r['train_size']}`" for p, r in P.items()),
        f"- Seeds: {', '.join(map(str, seeds))} "
        + ("(mean ± sample std over seeds below)" if len(seeds) > 1 else "(one seed: no std)"),
        f"- Test sizes: {len(results['eval_sizes'])} (`{cfg['eval_sizes']}`), "
        f"{cfg['eval_examples'] or 'all'} test examples each, eval mode {cfg['eval_mode']}",
        f"- Machine: {m['platform']}, {m['processor']}, {m['cpu_count']} CPUs, "
        f"jax {m['jax']}, devices {', '.join(m['devices'])}",
        f"- Date: {results['date']}; the comparison took {results['wall_time_s']:.0f} s",
        "- Runs: "
        + ", ".join(
            f"`runs/{name}`{' (reused)' if reused else ''}"
            for r in P.values()
            for name, reused in zip(r["runs"], r["reused"])
        ),
    ]


def _accuracy_table(results: dict) -> list[str]:
    P, seeds = results["policies"], results["seeds"]
    policies = list(P)
    lines = [
        "",
        "## Accuracy per test size "
        + (f"(mean ± std over {len(seeds)} seeds)" if len(seeds) > 1 else "(one seed)"),
        "",
        "| test size | " + " | ".join(policies) + " |",
        "|---|" + "---|" * len(policies),
    ]
    for key in results["eval_sizes"]:
        lines.append(
            f"| {key} | " + " | ".join(fmt(P[p]["eval_accuracy"][key]) for p in policies) + " |"
        )
    lines.append("| own sizes | " + " | ".join(fmt(P[p]["test_accuracy"]) for p in policies) + " |")
    return lines + ["", _own_sizes_note(results["config"])]


def _own_sizes_note(cfg: dict) -> str:
    """What the table's rows measure, and why on data of one size its 'own sizes' row may
    differ from that size's row (the same test examples, tested differently)."""
    examples = f"the first {cfg['eval_examples']}" if cfg.get("eval_examples") else "all the"
    text = (
        "Rows are test sizes (height x width) sorted by area; 'own sizes' tests every image at "
        f"its own size. Every row uses {examples} test examples."
    )
    differs = []
    if cfg.get("eval_mode") == "canvas":
        differs.append(
            "the size rows place each image on a canvas of the test size (--eval_mode=canvas), "
            "'own sizes' runs it as it is"
        )
    if cfg.get("recalibrate_bn"):
        differs.append(
            "the size rows use BatchNorm statistics re-estimated on training images at each "
            "test size (--recalibrate_bn), 'own sizes' the statistics kept from training"
        )
    if differs:
        text += (
            " On data of one size its 'own sizes' row can differ from that size's row: "
            + "; ".join(differs)
            + "."
        )
    return text


def _cost_table(results: dict) -> list[str]:
    lines = [
        "",
        "## Cost and localization",
        "",
        "| policy | train size | train compiles | eval compiles | train examples/s "
        "| wall time (s) | final loss | examples | pixels (M) | padded pixels (M) "
        "| pointing game | pointing game (grid mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p, r in results["policies"].items():
        cells = [
            p,
            f"`{r['train_size']}`",
            fmt(r["train_compiles"], 0),
            fmt(r["eval_compiles"], 0),
            fmt(_speed(r), 0),
            fmt(r["wall_time_s"], 1),
            fmt(r["final_loss"]),
            fmt(r.get("train_examples"), 0),
            fmt(_scaled(r.get("train_pixels"), 1e-6), 1),
            fmt(_scaled(r.get("train_padded_pixels"), 1e-6), 1),
            fmt(r.get("pointing_game")),
            fmt(_grid_mean(r.get("eval_pointing_game"))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [
        "",
        "Pointing game: the fraction of test images (own sizes) whose class-activation-map peak "
        "for the true class falls inside the digit's box; grid mean: its mean over the test "
        "sizes ('–' where the data has no boxes). Train examples/s: '–' for runs of fewer than "
        f"{MIN_STEPS} steps, too few to measure it.",
    ]


# --- files and plots -------------------------------------------------------------------------


def write_report(results: dict, workdir: str) -> None:
    """Write report.md, compare.json and the plots of ``results`` into ``workdir``."""
    write_json(os.path.join(workdir, "compare.json"), results)
    plot_accuracy_vs_size(results, os.path.join(workdir, "accuracy_vs_size.png"))
    if results["dataset"]["spatial_dims"] == 2:
        plot_heatmaps(results, os.path.join(workdir, "heatmaps.png"))
    write_atomic(os.path.join(workdir, "report.md"), report_markdown(results))


def plot_accuracy_vs_size(results: dict, path: str) -> None:
    """Mean accuracy per test size (sorted by area) per policy, with a ±std band over seeds."""
    from fcn_jax.plots import plt, save_figure

    keys = results["eval_sizes"]
    x = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(keys)), 4))
    for policy, r in results["policies"].items():
        mean = np.array([r["eval_accuracy"][k]["mean"] for k in keys])
        std = np.array([r["eval_accuracy"][k]["std"] or 0.0 for k in keys])
        (line,) = ax.plot(x, mean, marker="o", label=f"{policy} ({r['train_size']})")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    prod = format_size(PRODUCTION_SIZE)
    if prod in keys:
        ax.axvline(keys.index(prod), color="gray", linestyle=":", label=f"production {prod}")
    ax.set_xticks(x, keys, rotation=60)
    ax.set_xlabel("test size (height x width, sorted by area)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{results['dataset']['name']}: mean over {len(results['seeds'])} seed(s)")
    save_figure(fig, path)


def plot_heatmaps(results: dict, path: str) -> None:
    """Mean accuracy over test height x width per policy, side by side, plus mixed_example −
    fixed (or mixed_step − fixed) on a diverging colormap (blue: mixed better)."""
    from fcn_jax.plots import save_figure

    save_figure(heatmaps_figure(results), path)


def heatmaps_figure(results: dict):
    """The figure of :func:`plot_heatmaps`."""
    from fcn_jax.plots import draw_heatmap, plt

    policies = list(results["policies"])
    means = {p: _means(results, p) for p in policies}
    diff, mixed = None, _mixed_policies(policies)[-1:]  # mixed_example when compared
    if mixed:
        diff = {k: means[mixed[0]][k] - means["fixed"][k] for k in means["fixed"]}
    n = len(policies) + (diff is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.8), squeeze=False, layout="constrained")
    axes = list(axes[0])
    for i, (ax, p) in enumerate(zip(axes, policies)):
        # Policy and train size on two lines: on one ("mixed_step (mixed_step:14-56:14)") the
        # titles of neighbouring panels ran into each other.
        spec = results["policies"][p]["train_size"]
        image = draw_heatmap(ax, means[p], p if spec == p else f"{p}\n{spec}")
        if i:
            ax.set_ylabel("")
    fig.colorbar(image, ax=axes[: len(policies)], shrink=0.8, label="test accuracy")
    if diff is not None:
        limit = max(max(abs(v) for v in diff.values()), 0.01)
        ax = axes[-1]
        title = f"{mixed[0]} − fixed"
        image = draw_heatmap(ax, diff, title, cmap="RdBu", vmin=-limit, vmax=limit)
        ax.set_ylabel("")
        for text in ax.texts:  # white labels vanish on the diverging map's pale middle
            text.set_color("white" if abs(float(text.get_text())) > 0.6 * limit else "black")
        fig.colorbar(image, ax=ax, shrink=0.8, label="accuracy difference")
    return fig
