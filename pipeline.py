"""The whole MiniOneRec pipeline on one dataset, one script per arrow of the README diagram:

    data prep -> SIDs -> split CSVs -> popularity + SASRec -> SFT -> evaluate -> RL -> evaluate -> report

Every stage runs the same command a researcher would type (printed before it runs), writes into
`runs/<run>/`, and leaves a `.done/<stage>.json` marker with its commands and wall time, so a
re-run skips what finished with the same commands; a stage that runs again (changed settings,
`--force_stages rl`, or `--force` for all) redoes every stage after it. The report
(`results/<run>/results.md`, `results.json` and PNGs) compares popularity, SASRec, SFT and
SFT+RL on the same test split (`results/<run>/`).

    python pipeline.py                       # small from-scratch backbone (minutes on 2 cores)
    python pipeline.py --backbone smollm2    # pretrained SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import data
from report import write_report

REPO = Path(__file__).resolve().parent
logger = logging.getLogger("pipeline")

# Settings of the default small run: sized so the whole pipeline takes minutes on 2 CPU cores.
# The small backbone has SASRec's hidden size (64, 4 layers): SFT learns from one response per
# prompt, so on CPU the number of examples seen decides HR@K, and this shape sees 60k of them in
# the time a hidden-128 model sees 14k. It trains on the evaluated task only (SID history -> next
# SID): from scratch, the four alignment tasks cost it the history signal (HR@10 0.029 with 2,249
# alignment rows beside 60k, 0.0515 without, on the same 2,000 test rows). The documents' full
# recipe, all five tasks on every row, is sft.py without --tasks; the smollm2 profile keeps a few.
ALIGNMENT_ROWS = "sid_title:1349,sid_history_to_title:300,title_history_to_title:300,title_history_to_sid:300"
PROFILES = {
    "small": dict(backbone_dir="smol-64x4", backbone_shape=(64, 4, 2),
                  sft_tasks="sid_history_to_sid:60000", sft_epochs=1, sft_lr=3e-3,
                  sft_batch=32, sft_micro=16, cutoff_len=256, rl_steps=60, rl_lr=1e-4, rl_batch=16,
                  rl_generations=8, test_rows=2000, num_beams=20, sasrec_epochs=10),
    "smollm2": dict(backbone_dir="SmolLM2-135M-Instruct", backbone_shape=None,
                    sft_tasks="sid_history_to_sid:12000," + ALIGNMENT_ROWS, sft_epochs=1, sft_lr=3e-4,
                    sft_batch=16, sft_micro=8, cutoff_len=256, rl_steps=6, rl_lr=1e-5, rl_batch=16,
                    rl_generations=8, test_rows=200, num_beams=20, sasrec_epochs=10),
}


def write_test_sample(test_csv: Path, out: Path, n_rows: int, seed: int):
    rows = data.read_split_csv(test_csv)
    data.write_split_csv(random.Random(seed).sample(rows, min(n_rows, len(rows))), out)


class Pipeline:
    def __init__(self, run_dir: Path, cache: Path, force_stages: set[str], force: bool):
        self.run_dir = run_dir
        self.cache = cache
        self.force_stages = force_stages
        self.force = force
        self.done_dir = run_dir / ".done"
        self.done_dir.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}
        self.upstream_ran = False

    def stage(self, name: str, *commands: list[str]):
        """Run a stage's commands and record its wall time. It is skipped when its marker shows the
        same commands finished and no earlier stage ran in this invocation: every stage reads what
        the ones before it wrote, so a redone stage redoes all after it."""
        marker = self.done_dir / f"{name}.json"
        commands = [[str(part) for part in command] for command in commands]
        done = json.loads(marker.read_text()) if marker.is_file() else None
        if done and done.get("commands") == commands and not (
                self.force or name in self.force_stages or self.upstream_ran):
            self.timings[name] = done["seconds"]
            logger.info("[%s] done before (%.0f s), skipped", name, self.timings[name])
            return
        if done and done.get("commands") not in (None, commands):
            logger.info("[%s] its commands changed since it ran: redoing it", name)
        self.upstream_ran = True
        marker.unlink(missing_ok=True)
        start = time.time()
        for command in commands:
            logger.info("[%s] $ %s", name, shlex.join(command))
            env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
            result = subprocess.run(command, cwd=REPO, env=env)
            if result.returncode:
                raise SystemExit(f"stage {name} failed (exit {result.returncode}): {shlex.join(command)}")
        self.timings[name] = time.time() - start
        data.write_json({"seconds": self.timings[name], "commands": commands}, marker)
        logger.info("[%s] finished in %.0f s", name, self.timings[name])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", choices=list(PROFILES), default="small",
                        help="small: 3.4M-parameter model (SmolLM2 tokenizer and architecture, hidden 64 x 4 "
                             "layers, random init); smollm2: pretrained SmolLM2-135M-Instruct")
    parser.add_argument("--run", default=None, help="run name (default: ml100k-<backbone>)")
    parser.add_argument("--runs_dir", default=None,
                        help="folder of the runs' working files (default: runs/ beside pipeline.py)")
    parser.add_argument("--cache", default=None,
                        help="downloads and converted models (default: $MINIONEREC_CACHE or ~/.cache/minionerec)")
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument("--force_stages", default="", help="comma-separated stages to redo, with every stage after them")
    parser.add_argument("--sid_method", choices=["rqkmeans", "rqvae"], default="rqkmeans",
                        help="residual quantiser of rq/build_sids.py")
    parser.add_argument("--nproc", type=int, default=2,
                        help="processes for SFT/RL/evaluation (torchrun, gloo on CPU; one thread each: on 2 cores "
                             "two single-thread processes outrun one two-thread process)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    profile = PROFILES[args.backbone]
    run_dir = Path(args.runs_dir or REPO / "runs") / (args.run or f"ml100k-{args.backbone}")
    cache = Path(args.cache or os.environ.get("MINIONEREC_CACHE", str(Path.home() / ".cache" / "minionerec")))
    pipe = Pipeline(run_dir, cache, set(filter(None, args.force_stages.split(","))), args.force)
    py = sys.executable
    launch = [py] if args.nproc == 1 else [py, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}"]
    d = run_dir / "data"
    models = cache / "models"
    backbone = models / profile["backbone_dir"]
    category = "ml-100k"

    convert = [py, "convert_gguf.py", "--output_dir", str(models / "SmolLM2-135M-Instruct")]
    if profile["backbone_shape"]:
        hidden, layers, heads = profile["backbone_shape"]
        convert += ["--small_dir", str(backbone), "--small_hidden", str(hidden), "--small_layers", str(layers),
                    "--small_heads", str(heads)]
    pipe.stage("backbone", convert)
    pipe.stage("data", [py, "data/prepare_ml100k.py", "--output_dir", str(d), "--cache_dir", str(cache)])
    pipe.stage("sids", [py, "rq/build_sids.py", "--item_meta_path", str(d / "item.json"), "--output_dir", str(d),
                        "--method", args.sid_method])
    pipe.stage("split_csvs", [py, "data/convert_dataset.py", "--data_dir", str(d)])
    split = {name: str(d / f"{name}.csv") for name in ("train", "valid", "test")}
    # every model is scored on the same seeded sample of test rows (LLM beam search over all
    # ~10k test rows would dominate a CPU run)
    split["test"] = str(d / f"test_sample{profile['test_rows']}.csv")
    if not Path(split["test"]).is_file() or args.force:
        write_test_sample(d / "test.csv", Path(split["test"]), profile["test_rows"], seed=42)

    baselines = run_dir / "baselines"
    pipe.stage("sasrec", [py, "sasrec.py", "--model", "SASRec", "--train_file", split["train"],
                          "--valid_file", split["valid"], "--test_file", split["test"],
                          "--index_file", str(d / "index.json"), "--epoch", str(profile["sasrec_epochs"]), "--early_stop", "3",
                          "--result_json_path", str(baselines / "sasrec.json"),
                          "--checkpoint_path", str(baselines / "sasrec.pt")])

    sft_dir = run_dir / "sft"
    pipe.stage("sft", launch + [
        "sft.py", "--base_model", str(backbone), "--train_file", split["train"], "--eval_file", split["valid"],
        "--output_dir", str(sft_dir), "--sid_index_path", str(d / "index.json"),
        "--item_meta_path", str(d / "item.json"), "--category", category,
        "--tasks", profile["sft_tasks"], "--eval_sample", "100",
        "--num_epochs", str(profile["sft_epochs"]), "--learning_rate", str(profile["sft_lr"]),
        "--batch_size", str(profile["sft_batch"]), "--micro_batch_size", str(profile["sft_micro"]),
        "--cutoff_len", str(profile["cutoff_len"]), "--group_by_length", "True", "--seed", "42"])

    def evaluate(name, checkpoint):
        predictions = run_dir / "eval" / f"{name}_predictions.json"
        return [
            launch + ["evaluate.py", "--base_model", str(checkpoint), "--info_file", str(d / "info.txt"),
                      "--category", category, "--test_data_path", split["test"],
                      "--result_json_data", str(predictions), "--num_beams", str(profile["num_beams"]),
                      "--batch_size", "8"],
            [py, "calc.py", "--path", str(predictions), "--item_path", str(d / "info.txt"),
             "--out_json", str(run_dir / "eval" / f"{name}_metrics.json"),
             "--out_png", str(run_dir / "eval" / f"{name}_metrics.png")],
        ]

    pipe.stage("eval_sft", *evaluate("sft", sft_dir / "final_checkpoint"))

    rl_dir = run_dir / "rl"
    pipe.stage("rl", launch + [
        "rl.py", "--model_path", str(sft_dir / "final_checkpoint"), "--train_file", split["train"],
        "--eval_file", split["valid"], "--info_file", str(d / "info.txt"),
        "--sid_index_path", str(d / "index.json"), "--item_meta_path", str(d / "item.json"),
        "--category", category, "--output_dir", str(rl_dir),
        "--train_batch_size", str(profile["rl_batch"]), "--eval_batch_size", str(profile["rl_batch"]),
        "--num_generations", str(profile["rl_generations"]), "--max_steps", str(profile["rl_steps"]),
        "--learning_rate", str(profile["rl_lr"]), "--beta", "0.04", "--beam_search", "True",
        "--reward_type", "ranking", "--eval_step", "1000000", "--eval_sample", "32",
        "--save_steps", "10", "--cutoff_len", str(profile["cutoff_len"]), "--seed", "42"])
    pipe.stage("eval_rl", *evaluate("rl", rl_dir / "final_checkpoint"))

    report_dir = REPO / "results" / run_dir.name
    write_report(run_dir, report_dir, pipe.timings, backbone=args.backbone)
    print((report_dir / "results.md").read_text())


if __name__ == "__main__":
    main()
