"""How fast the desktop app feels: launch to a mapped window, model ready, one inference.

    python benchmarks/startup.py [FILE] [--runs 5] [--inferences 3] [--model DIR]

Launches ``python -m spemr_gui.app FILE`` as a user would (a fresh interpreter, every
import included) with SPEMR_GUI_TRACE set (spemr_gui/timing.py) and isolated settings
(a temporary XDG_CONFIG_HOME, so the user's own model choice and recent files are not
read or changed). Needs a display: run under Xvfb (``Xvfb :9 & DISPLAY=:9 python ...``);
without DISPLAY it uses QT_QPA_PLATFORM=offscreen, where "mapped" means "exposed by the
offscreen platform" (no window manager, slightly optimistic).

Per run it prints, in seconds from the launch:
  window    the main window is mapped (goal <= 1.5 s)
  model     the model finished loading in the background
  stall     the longest the GUI thread left its event loop between window and model
            (the window stays usable when this stays near or under ~0.1 s)
  infer     each single-spectrum inference once the model is loaded (goal <= 1 s;
            the first includes torch's first-call set-up)
then the median and range over the runs. Figures move with machine load; the machine
this was written on has 2 cores shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT / "assets" / "samples" / "med-58800-SYNTHGIANT_sp01-001.fits.gz"


def one_run(file: Path, inferences: int, model: str | None, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        env = dict(
            os.environ,
            SPEMR_GUI_TRACE=str(trace),
            SPEMR_GUI_TRACE_INFER=str(inferences),
            XDG_CONFIG_HOME=str(Path(tmp) / "config"),
        )
        if not env.get("DISPLAY"):
            env["QT_QPA_PLATFORM"] = "offscreen"
        command = [sys.executable, "-m", "spemr_gui.app", str(file)]
        if model:
            command += ["--model", model]
        t0 = time.time()
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            _out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _out, err = process.communicate()
            err += "\n(timed out)"
        events = [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() else []
    result: dict = {"infer": [], "errors": []}
    for event in events:
        name, t = event["event"], event["t"] - t0
        if name == "exposed":
            result["window"] = t
        elif name in ("model_ready", "model_failed"):
            result["model"] = t
            if name == "model_failed":
                result["errors"].append(event.get("message", "model failed"))
        elif name == "stall":
            result["stall"] = event["seconds"]
        elif name == "inference_done":
            result["infer"].append(event["seconds"])
        elif name == "inference_failed":
            result["errors"].append(event.get("message", "inference failed"))
    if "window" not in result:
        result["errors"].append("no window: " + " ".join(err.split())[-300:])
    return result


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: -"
    return (
        f"{name}: median {statistics.median(values):.2f} s "
        f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=str(DEFAULT_FILE))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--inferences", type=int, default=3, help="single-spectrum inferences per run, after the model is loaded"
    )
    parser.add_argument("--model", help="model bundle folder (default: the shipped default)")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    print(
        f"spemr-gui {args.file} on {os.environ.get('DISPLAY') or 'offscreen'}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    runs = []
    for i in range(args.runs):
        r = one_run(Path(args.file), args.inferences, args.model, args.timeout)
        runs.append(r)
        infer = ", ".join(f"{s:.2f}" for s in r["infer"]) or "-"
        print(
            f"run {i + 1}: window {r.get('window', float('nan')):.2f} s, "
            f"model {r.get('model', float('nan')):.2f} s, stall {r.get('stall', float('nan')):.2f} s, "
            f"infer [{infer}] s" + (f"  errors: {r['errors']}" if r["errors"] else ""),
            flush=True,
        )
    print(summary("launch-to-window", [r["window"] for r in runs if "window" in r]))
    print(summary("launch-to-model-ready", [r["model"] for r in runs if "model" in r]))
    print(summary("longest GUI stall while loading", [r["stall"] for r in runs if "stall" in r]))
    print(summary("first inference", [r["infer"][0] for r in runs if r["infer"]]))
    print(summary("later inferences", [s for r in runs for s in r["infer"][1:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
