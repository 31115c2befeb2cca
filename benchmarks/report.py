"""Markdown table and PNG plots from results.json."""

from __future__ import annotations

from pathlib import Path


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base else "-"


def write_report(results: dict, out: Path) -> None:
    m = results["machine"]
    base = next(iter(results["engines"]))
    shapes = sorted({(r["batch"], r["seq"]) for r in results["shapes"]})
    by = {(r["engine"], r["batch"], r["seq"]): r for r in results["shapes"]}
    flags = ", ".join(k for k, v in m["cpu_flags"].items() if v) or "none"
    lines = [
        f"# albert-onnx benchmark — {results['model']}" + (" (SEEDED RANDOM WEIGHTS, real vocabulary)" if results["random_weights"] else ""),
        "",
        f"{m['date']} · {m['cpu']} ({m['cores']} cores; flags: {flags}) · {m['threads']} threads · Python {m['python']} · "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + (" · --quick" if results["quick"] else ""),
        "",
        f"Fixed shapes: median ms per call (p10–p90), ratio = {base} median / engine median, same run, engines interleaved.",
        "",
        "| engine | " + " | ".join(f"b{b}·s{s}" for b, s in shapes) + " | size MB | load s |",
        "|---|" + "---|" * (len(shapes) + 2),
    ]
    for name, info in results["engines"].items():
        if "error" in info:
            lines.append(f"| {name} | failed: {info['error'][:120]} |" + " |" * (len(shapes) + 1))
            continue
        cells = []
        for b, s in shapes:
            r, r0 = by.get((name, b, s)), by.get((base, b, s))
            cells.append(f"{r['median_ms']:.1f} ({r['p10_ms']:.1f}–{r['p90_ms']:.1f}) {_ratio(r0['median_ms'], r['median_ms'])}" if r else "-")
        size = f"{info['file_size'] / 1e6:.1f}" if info.get("file_size") else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {size} | {info['load_seconds']:.2f} |")
    lines += ["", "Single request over real STS-B sentences (end to end, tokenization included), and corpus throughput "
              "(STS-B sentences, batch 32; eager PyTorch with the usual padded batches):", "",
              "| engine | p50 ms | p90 ms | p99 ms | corpus texts/s | vs base | min cos vs base | RSS after load MB |", "|---|---|---|---|---|---|---|---|"]
    c0 = results["corpus"].get(base, {}).get("texts_per_s")
    for name, info in results["engines"].items():
        if "error" in info or name not in results["latency"]:
            continue
        l, c, a = results["latency"][name], results["corpus"][name], results["accuracy"][name]
        lines.append(f"| {name} | {l['p50_ms']:.1f} | {l['p90_ms']:.1f} | {l['p99_ms']:.1f} | {c['texts_per_s']:.1f} | "
                     f"{_ratio(c['texts_per_s'], c0)} | {a['min_cosine']:.5f} | {info['rss_after_load_mb']:.0f} |")
    corpus_n = next(iter(results["corpus"].values()))["texts"] if results["corpus"] else 0
    lines += ["", f"Corpus: {corpus_n} texts. Peak process RSS {results['peak_rss_mb']:.0f} MB (all engines in one process)."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plots(results, out)


def _plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, i in results["engines"].items() if "error" not in i]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        rows = sorted((r["seq"], r["median_ms"]) for r in results["shapes"] if r["engine"] == name and r["batch"] == 1)
        left.plot(*zip(*rows), marker="o", label=name)
        rows = sorted((r["batch"], r["seq_per_s"]) for r in results["shapes"] if r["engine"] == name and r["seq"] == 128)
        right.plot(*zip(*rows), marker="o", label=name)
    m = results["machine"]
    left.set(xlabel="sequence length (batch 1)", ylabel="median latency, ms", xscale="log", yscale="log", title="Latency vs sequence length")
    right.set(xlabel="batch size (seq 128)", ylabel="sequences / s", xscale="log", yscale="log", title="Throughput vs batch size")
    left.legend(fontsize=7)
    fig.suptitle(f"{results['model']}{' (random weights)' if results['random_weights'] else ''} · {m['cpu']} · {m['threads']} threads · {m['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "latency_throughput.png", dpi=110)
    plt.close(fig)
