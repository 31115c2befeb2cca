"""Markdown table and PNG plots from results.json."""

from __future__ import annotations

from pathlib import Path


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}×" if base else "-"


def write_report(results: dict, out: Path) -> None:
    m = results["machine"]
    base = results["shapes"][0]["engine"]  # the baseline: first engine that ran
    shapes = sorted({(r["batch"], r["seq"]) for r in results["shapes"]})
    by = {(r["engine"], r["batch"], r["seq"]): r for r in results["shapes"]}
    flags = ", ".join(k for k, v in m["cpu_flags"].items() if v) or "none"
    lines = [
        f"# albert-onnx benchmark — {results['model']}" + (" (SEEDED RANDOM WEIGHTS, real vocabulary)" if results["random_weights"] else ""),
        "",
        f"{m['date']} · " + (f"GPU {m['gpu']} · " if m.get("gpu") else "") + f"{m['cpu']} ({_cpus(m)}; flags: {flags}) · "
        f"{m['threads']} threads · Python {m['python']} · "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + (" · --quick" if results["quick"] else "")
        + (f" · harness {m['harness']}" if m.get("harness") else ""),
        "",
        f"Fixed shapes: median ms per call (p10–p90), ratio = {base} median / engine median, same run, engines interleaved.",
        "",
        "| engine | " + " | ".join(f"b{b}·s{s}" for b, s in shapes) + " | size MB | load s |",
        "|---|" + "---|" * (len(shapes) + 2),
    ]
    for name, info in results["engines"].items():
        if "error" in info or "skipped" in info:
            why = f"failed: {info['error'][:120]}" if "error" in info else f"skipped: {info['skipped']}"
            lines.append(f"| {name} | {why} |" + " |" * (len(shapes) + 1))
            continue
        cells = []
        for b, s in shapes:
            r, r0 = by.get((name, b, s)), by.get((base, b, s))
            cells.append(f"{r['median_ms']:.1f} ({r['p10_ms']:.1f}–{r['p90_ms']:.1f}) {_ratio(r0['median_ms'], r['median_ms'])}" if r else "-")
        size = f"{info['file_size'] / 1e6:.1f}" if info.get("file_size") else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {size} | {info['load_seconds']:.2f} |")
    runs = {(r["batch"], r["seq"]): r["runs"] for r in results["shapes"]}
    lines += ["", "Calls timed per engine: " + ", ".join(f"b{b}·s{s} {runs[b, s]}" for b, s in shapes) + " (after one warm-up call)."]
    attention = {name: info["attention"] for name, info in results["engines"].items() if "attention" in info}
    if attention:
        lines.append("PyTorch attention: " + ", ".join(f"{name} {kind}" for name, kind in attention.items()) + ".")
    gpu = m.get("device") == "cuda"  # its own column: the GPU memory each engine holds
    counted = any("tokens_computed" in c for c in results["corpus"].values())  # harnesses since 2026-12-06
    if counted:
        lines += ["", f"Single request over {results.get('latency_requests', '?')} real STS-B sentences (end to end, tokenization "
                  "included), and corpus throughput (STS-B sentences, batch 32; albert-onnx: one exact token length per call; "
                  "PyTorch and Optimum: sorted by token count, padded per batch; sentence-transformers: its own sort by "
                  "characters; tokens computed: token positions run, padding included, where known):", ""]
    else:
        lines += ["", "Single request over real STS-B sentences (end to end, tokenization included), and corpus throughput "
                  "(STS-B sentences, batch 32; eager PyTorch with the usual padded batches):", ""]
    lines += ["| engine | p50 ms | p90 ms | p99 ms | corpus texts/s | vs base | " + ("tokens computed | " if counted else "")
              + "min cos vs base, same ids | centred cos mean / min | rank agreement | batch invariance | min cos vs base, end to end | cold start s | peak RSS MB |"
              + (" GPU MB |" if gpu else ""),
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if counted else "") + ("---|" if gpu else "")]
    c0 = results["corpus"].get(base, {}).get("texts_per_s")
    for name, info in results["engines"].items():
        if name not in results["latency"]:
            continue
        l, c, a = results["latency"][name], results["corpus"][name], results["accuracy"][name]
        lines.append(f"| {name} | {l['p50_ms']:.1f} | {l['p90_ms']:.1f} | {l['p99_ms']:.1f} | {c['texts_per_s']:.1f} | "
                     f"{_ratio(c['texts_per_s'], c0)} | " + (f"{_count(c.get('tokens_computed'))} | " if counted else "") + f"{a['same_ids_min_cosine']:.5f} | {a['centred_cosine_mean']:.4f} / {a['centred_cosine_min']:.4f} | "
                     f"{a['rank_agreement']:.5f} | {a['batch_invariance_max_abs_diff']:.1e} | {a['end_to_end_min_cosine']:.5f} | "
                     f"{_own(info, 'cold_start_s', '.2f')} | {_own(info, 'peak_rss_mb', '.0f')} |" + (f" {_gpu_mb(info)} |" if gpu else ""))
    corpus_n = next(iter(results["corpus"].values()))["texts"] if results["corpus"] else 0
    shape = next((i["own_process"].get("peak_rss_shape") for i in results["engines"].values() if "peak_rss_shape" in i.get("own_process", {})), "?")
    lines += ["", f"Cold start: a fresh process, from its start to the first vector of one short text (imports, load, first run). "
              f"Peak RSS: that process after one {shape} call." + (" GPU MB: what that process holds on the GPU then (CUDA "
              "context included), as nvidia-smi lists it for the process, or (†) the growth of the device's used memory." if gpu else "")]
    same_n = next(iter(results["accuracy"].values()))["same_ids_texts"] if results["accuracy"] else 0
    first = next(iter(results["accuracy"].values()), {})
    lines += [f"Corpus: {corpus_n} texts. Same-ids cosine: {same_n} STS-B texts tokenized once by the baseline's tokenizer and fed "
              f"to every engine (the model alone). Centred cosine: the baseline's mean vector subtracted from both (with random "
              f"weights every sentence vector is nearly parallel, so raw cosines cannot fail). Rank agreement: Spearman of the "
              f"{same_n // 2} STS-B pair similarities against the baseline's. Batch invariance: max |delta| of unit vectors, "
              f"{first.get('batch_invariance_texts', 0)} texts alone vs inside their padded batch of 32."]
    differs = results.get("tokenizer_differs")
    if differs:
        lines.append(f"End-to-end cosine includes tokenization: albert-onnx's tokenizer.json reproduces ALBERT's SentencePiece "
                     f"tokenizer; Hugging Face's fast tokenizer (used by the PyTorch, Optimum and sentence-transformers engines) "
                     f"splits {differs['differ_from_hf_fast']} of {differs['texts']} corpus texts differently (e.g. \"key-board\").")
    lines += _profile_lines(results.get("profile"))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plots(results, out)


def _cpus(machine: dict) -> str:
    """"2 logical CPUs, family 25 model 17" (results since 2026-12-06) or "2 cores" (earlier ones: os.cpu_count())."""
    if "logical_cpus" not in machine:
        return f"{machine['cores']} cores"
    model = f", family {machine['cpu_cpu_family']} model {machine['cpu_model']}" if "cpu_model" in machine else ""
    return f"{machine['logical_cpus']} logical CPUs{model}"


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "-"


def _own(info: dict, key: str, spec: str) -> str:
    own = info.get("own_process", {})
    if "skipped" in own:
        return own["skipped"]
    return format(own[key], spec) if key in own else f"failed: {own.get('error', 'not run')[:60]}"


def _gpu_mb(info: dict) -> str:
    own = info.get("own_process", {})
    if "skipped" in own:
        return own["skipped"]
    if own.get("gpu_memory_mb") is None:
        return own.get("gpu_memory_by") or f"failed: {own.get('error', 'not run')[:60]}"
    return f"{own['gpu_memory_mb']:.0f}" + (" †" if "growth" in own.get("gpu_memory_by", "") else "")


def _profile_lines(profile: dict | None) -> list[str]:
    if not profile:
        return []
    shapes = list(profile["shapes"])
    lines = ["", f"Where the time goes — {profile['engine']}, ONNX Runtime profiler, kernel ms per call (share):", "",
             "| op type | " + " | ".join(shapes) + " |", "|---|" + "---|" * len(shapes)]
    top = {}
    for shape in shapes:
        for op in profile["shapes"][shape]["ops"]:
            top.setdefault(op["op"], {})[shape] = op
    for op, cells in sorted(top.items(), key=lambda kv: -max(c["share"] for c in kv[1].values()))[:8]:
        lines.append(f"| {op} | " + " | ".join(f"{cells[s]['ms_per_call']:.2f} ({cells[s]['share']:.0%})" if s in cells else "-" for s in shapes) + " |")
    lines.append("| all kernels | " + " | ".join(f"{profile['shapes'][s]['ms_per_call']:.1f}" for s in shapes) + " |")
    single = profile.get("single_request")
    if single:
        lines += ["", f"Single short request (≤ 12 words): {single['end_to_end_ms']:.2f} ms end to end (median); tokenize, frame and "
                  f"pad alone {single['host_ms']:.3f} ms ({single['host_share']:.1%} of it)."]
    return lines


def _plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, i in results["engines"].items() if n in results["latency"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in names:
        rows = sorted((r["seq"], r["median_ms"]) for r in results["shapes"] if r["engine"] == name and r["batch"] == 1)
        left.plot(*zip(*rows), marker="o", label=name)
        rows = sorted((r["batch"], r["seq_per_s"]) for r in results["shapes"] if r["engine"] == name and r["seq"] == 128)
        right.plot(*zip(*rows), marker="o", label=name)
    m = results["machine"]
    left.set(xlabel="sequence length (batch 1)", ylabel="median latency, ms", xscale="log", yscale="log", title="Latency vs sequence length")
    right.set(xlabel="batch size (seq 128)", ylabel="sequences / s", xscale="log", title="Throughput vs batch size")
    right.set_ylim(bottom=0)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for axis, ticks in ((left, sorted({r["seq"] for r in results["shapes"] if r["batch"] == 1})),
                        (right, sorted({r["batch"] for r in results["shapes"] if r["seq"] == 128}))):
        axis.set_xticks(ticks)
        for ax in (axis.xaxis, axis.yaxis):
            ax.set_major_formatter(ScalarFormatter())
            ax.set_minor_formatter(NullFormatter())
        axis.grid(True, which="major", alpha=0.3)
    left.legend(fontsize=7)
    flags = ", ".join(k for k, v in m["cpu_flags"].items() if v) or "none"
    fig.suptitle(f"{results['model']}{' (random weights)' if results['random_weights'] else ''} · {m['cpu']} ({flags}) · "
                 f"{m['threads']} threads · onnxruntime {m['versions'].get('onnxruntime') or m['versions'].get('onnxruntime-gpu')} · {m['date']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "latency_throughput.png", dpi=110)
    plt.close(fig)
